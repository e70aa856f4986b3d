package callback

import (
	"crypto/sha1"
	"crypto/subtle"
	"encoding/hex"
	"slices"
)

// Signature is WeChat's signature over parts: the lowercase hex sha1 of the
// parts sorted as byte strings and concatenated. The URL and plaintext
// signature is over (token, timestamp, nonce); msg_signature adds the
// Encrypt value.
func Signature(parts ...string) string {
	sum := signatureSum(parts)
	return hex.EncodeToString(sum[:])
}

// signatureSum is the sha1 of Signature. Every push is signed and every
// reply too, so it sorts and concatenates without allocating for the
// three or four parts WeChat signs, but for the Encrypt value's length.
func signatureSum(parts []string) [sha1.Size]byte {
	var small [4]string
	sorted := small[:0]
	if len(parts) > len(small) {
		sorted = make([]string, 0, len(parts))
	}
	n := 0
	for _, p := range parts {
		sorted = append(sorted, p)
		n += len(p)
	}
	slices.Sort(sorted)
	var stack [256]byte
	buf := stack[:0]
	if n > len(stack) {
		buf = make([]byte, 0, n)
	}
	for _, p := range sorted {
		buf = append(buf, p...)
	}
	return sha1.Sum(buf)
}

// CheckSignature reports whether got is the signature over parts. The
// comparison takes the same time wherever the first difference is, so the
// answer's timing tells nothing about the correct signature. Upper-case hex
// is accepted: it is the same digest.
func CheckSignature(got string, parts ...string) bool {
	var digest [sha1.Size]byte
	if len(got) != hex.EncodedLen(len(digest)) {
		return false
	}
	if _, err := hex.Decode(digest[:], []byte(got)); err != nil {
		return false
	}
	want := signatureSum(parts)
	return subtle.ConstantTimeCompare(digest[:], want[:]) == 1
}
