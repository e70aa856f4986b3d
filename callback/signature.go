package callback

import (
	"crypto/sha1"
	"crypto/subtle"
	"encoding/hex"
	"slices"
	"strings"
)

// Signature is WeChat's signature over parts: the lowercase hex sha1 of the
// parts sorted as byte strings and concatenated. The URL and plaintext
// signature is over (token, timestamp, nonce); msg_signature adds the
// Encrypt value.
func Signature(parts ...string) string {
	sorted := slices.Clone(parts)
	slices.Sort(sorted)
	h := sha1.New()
	for _, p := range sorted {
		h.Write([]byte(p))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// CheckSignature reports whether got is the signature over parts. The
// comparison takes the same time wherever the first difference is, so the
// answer's timing tells nothing about the correct signature. Upper-case hex
// is accepted: it is the same digest.
func CheckSignature(got string, parts ...string) bool {
	want := Signature(parts...)
	if len(got) != len(want) {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(strings.ToLower(got)), []byte(want)) == 1
}
