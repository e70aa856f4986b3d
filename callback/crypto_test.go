package callback

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
)

func TestOfficialSampleVector(t *testing.T) {
	if got := Signature(sampleToken, sampleTimestamp, sampleNonce, sampleEncrypt); got != sampleSignature {
		t.Fatalf("msg_signature = %s, want %s", got, sampleSignature)
	}
	c, err := NewCrypter(sampleKey, sampleAppID)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := c.Decrypt(sampleEncrypt)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := ParseMessage(plain)
	if err != nil {
		t.Fatalf("%v: %q", err, plain)
	}
	want := Message{
		ToUserName: "gh_10f6c3c3ac5a", FromUserName: "oyORnuP8q7ou2gfYjqLzSIWZf0rs",
		CreateTime: 1409735668, MsgType: TypeText, Content: "abcdteT", MsgID: "6054768590064713728",
	}
	if msg.ToUserName != want.ToUserName || msg.FromUserName != want.FromUserName ||
		msg.CreateTime != want.CreateTime || msg.MsgType != want.MsgType ||
		msg.Content != want.Content || msg.MsgID != want.MsgID {
		t.Fatalf("decrypted message %+v, want %+v", msg, want)
	}

	// The same key with another AppID must refuse it.
	other, err := NewCrypter(sampleKey, "wx0000000000000000")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Decrypt(sampleEncrypt); !errors.Is(err, ErrAppID) {
		t.Fatalf("wrong appid: err %v, want ErrAppID", err)
	}
}

func TestCrypterRoundTrip(t *testing.T) {
	c, err := NewCrypter(testKey, testAppID)
	if err != nil {
		t.Fatal(err)
	}
	// Lengths around the 32-byte block: framing is 16+4+len(appid)=36
	// bytes, so a 28-byte message fills two blocks exactly and takes a
	// whole block (pad value 32) of padding.
	for _, msg := range []string{"", "a", strings.Repeat("x", 27), strings.Repeat("x", 28), strings.Repeat("x", 29),
		"<xml><Content><![CDATA[你好😀\ue415]]></Content></xml>", strings.Repeat("长", 5000)} {
		enc, err := c.Encrypt(fixedRandom(9), []byte(msg))
		if err != nil {
			t.Fatal(err)
		}
		raw, err := base64.StdEncoding.DecodeString(enc)
		if err != nil || len(raw)%32 != 0 {
			t.Fatalf("len %d: ciphertext of %d bytes (err %v) is not 32-byte aligned", len(msg), len(raw), err)
		}
		got, err := c.Decrypt(enc)
		if err != nil {
			t.Fatalf("len %d: %v", len(msg), err)
		}
		if string(got) != msg {
			t.Fatalf("round trip changed the message: %q", got)
		}
	}
}

func TestCrypterPadsToThirtyTwo(t *testing.T) {
	c, err := NewCrypter(testKey, testAppID)
	if err != nil {
		t.Fatal(err)
	}
	// 16+4+28+16 = 64: aligned, so a whole 32-byte block of padding.
	enc, err := c.Encrypt(fixedRandom(1), bytes.Repeat([]byte("m"), 28))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := base64.StdEncoding.DecodeString(enc)
	if len(raw) != 96 {
		t.Fatalf("ciphertext %d bytes, want 96 (64 + a full 32-byte pad block)", len(raw))
	}
}

// frame builds a decrypted plaintext: prefix, length field, msg, appid,
// then pad bytes appended as given.
func frame(msgLen uint32, msg, appID string, pad []byte) []byte {
	b := bytes.Repeat([]byte{0xAA}, 16)
	b = binary.BigEndian.AppendUint32(b, msgLen)
	b = append(b, msg...)
	b = append(b, appID...)
	return append(b, pad...)
}

// padTo returns the PKCS#7 padding that brings n bytes to a multiple of 32.
func padTo(n int) []byte {
	p := 32 - n%32
	return bytes.Repeat([]byte{byte(p)}, p)
}

func TestDecryptRejects(t *testing.T) {
	c, err := NewCrypter(testKey, testAppID)
	if err != nil {
		t.Fatal(err)
	}
	good := frame(5, "hello", testAppID, nil)
	good = append(good, padTo(len(good))...)
	if msg, err := c.Decrypt(rawEncrypt(t, testKey, good)); err != nil || string(msg) != "hello" {
		t.Fatalf("hand-built frame: %q, %v", msg, err)
	}

	badLast := func(b []byte, v byte) []byte {
		b = bytes.Clone(b)
		b[len(b)-1] = v
		return b
	}
	inconsistent := bytes.Clone(good)
	inconsistent[len(inconsistent)-2] ^= 0x01 // last byte says N, the one before differs
	// 32 bytes: the 16-byte prefix and 16 bytes of padding, no length field.
	tooShort := append(bytes.Repeat([]byte{0xAA}, 16), bytes.Repeat([]byte{16}, 16)...)
	huge := frame(0xFFFFFFFF, "hello", testAppID, nil)
	huge = append(huge, padTo(len(huge))...)
	overrun := frame(6, "hello", "", nil) // length one past the end
	overrun = append(overrun, padTo(len(overrun))...)
	wrongApp := frame(5, "hello", "wxsomebodyelse00", nil)
	wrongApp = append(wrongApp, padTo(len(wrongApp))...)

	tests := []struct {
		name    string
		encrypt string
		want    error
	}{
		{"not base64", "%%%not base64%%%", ErrMalformed},
		{"empty", "", ErrDecrypt},
		{"16 bytes, not a 32-byte multiple", base64.StdEncoding.EncodeToString(make([]byte, 16)), ErrDecrypt},
		{"48 bytes", base64.StdEncoding.EncodeToString(make([]byte, 48)), ErrDecrypt},
		{"pad value 0", rawEncrypt(t, testKey, badLast(good, 0)), ErrDecrypt},
		{"pad value 33", rawEncrypt(t, testKey, badLast(good, 33)), ErrDecrypt},
		{"pad value 255", rawEncrypt(t, testKey, badLast(good, 255)), ErrDecrypt},
		{"inconsistent pad bytes", rawEncrypt(t, testKey, inconsistent), ErrDecrypt},
		{"shorter than prefix and length", rawEncrypt(t, testKey, tooShort), ErrDecrypt},
		{"length field 2^32-1", rawEncrypt(t, testKey, huge), ErrDecrypt},
		{"length field past the end", rawEncrypt(t, testKey, overrun), ErrDecrypt},
		{"other appid", rawEncrypt(t, testKey, wrongApp), ErrAppID},
		{"other key", rawEncrypt(t, testPrevKey, good), ErrDecrypt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg, err := c.Decrypt(tt.encrypt)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err %v (msg %q), want %v", err, msg, tt.want)
			}
		})
	}
}

// CBC without a MAC is malleable: the integrity of a message rests on
// msg_signature, which covers the Encrypt string. This checks that
// flipping any single byte of the ciphertext never panics, and that the
// service (which checks the signature first) refuses every such change.
func TestTamperedCiphertext(t *testing.T) {
	c, err := NewCrypter(testKey, testAppID)
	if err != nil {
		t.Fatal(err)
	}
	msg := textXML("1", "hello")
	enc, err := c.Encrypt(fixedRandom(5), []byte(msg))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := base64.StdEncoding.DecodeString(enc)
	s := newTestService(t, Rules{}, nil)
	for i := range raw {
		tampered := bytes.Clone(raw)
		tampered[i] ^= 0x80
		tenc := base64.StdEncoding.EncodeToString(tampered)
		if got, err := c.Decrypt(tenc); err == nil && string(got) == msg {
			t.Fatalf("byte %d: tampered ciphertext decrypted to the original", i)
		}
		q := Query{
			MsgSignature: Signature(testToken, testTimestamp(), "n", enc), // signed the original
			Timestamp:    testTimestamp(), Nonce: "n", EncryptType: "aes",
		}
		body := "<xml><Encrypt><![CDATA[" + tenc + "]]></Encrypt></xml>"
		if _, err := s.Handle(t.Context(), q, []byte(body)); !errors.Is(err, ErrSignature) {
			t.Fatalf("byte %d: tampered message: err %v, want ErrSignature", i, err)
		}
	}
}

func TestNewCrypterRejectsBadKeys(t *testing.T) {
	for _, key := range []string{"", "short", strings.Repeat("a", 42), strings.Repeat("a", 44), strings.Repeat("*", 43)} {
		if _, err := NewCrypter(key, testAppID); err == nil {
			t.Errorf("key %q accepted", key)
		}
	}
}
