package callback

import (
	"net/url"
	"strings"
	"testing"
)

func TestSignature(t *testing.T) {
	// sha1("1409735669" + "1320562132" + "spamtest"), sorted as bytes.
	want := Signature(sampleTimestamp, sampleNonce, sampleToken)
	tests := []struct {
		name  string
		got   string
		parts []string
		ok    bool
	}{
		{"any order", want, []string{sampleToken, sampleTimestamp, sampleNonce}, true},
		{"upper-case hex", strings.ToUpper(want), []string{sampleNonce, sampleToken, sampleTimestamp}, true},
		{"official msg_signature", sampleSignature, []string{sampleToken, sampleTimestamp, sampleNonce, sampleEncrypt}, true},
		{"msg_signature without Encrypt", sampleSignature, []string{sampleToken, sampleTimestamp, sampleNonce}, false},
		{"other token", want, []string{"other", sampleTimestamp, sampleNonce}, false},
		{"empty", "", []string{sampleToken, sampleTimestamp, sampleNonce}, false},
		{"truncated", want[:39], []string{sampleToken, sampleTimestamp, sampleNonce}, false},
		{"one digit off", want[:39] + string("0123456789abcdef"[(strings.IndexByte("0123456789abcdef", want[39])+1)%16]), []string{sampleToken, sampleTimestamp, sampleNonce}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := CheckSignature(tt.got, tt.parts...); got != tt.ok {
				t.Fatalf("CheckSignature = %v, want %v", got, tt.ok)
			}
		})
	}
	if len(want) != 40 || strings.ToLower(want) != want {
		t.Fatalf("signature %q is not 40 lowercase hex digits", want)
	}
}

func TestQueryRoundTrip(t *testing.T) {
	v, err := url.ParseQuery("signature=a&msg_signature=b&timestamp=1&nonce=2&echostr=e%2Bx&encrypt_type=aes&openid=o")
	if err != nil {
		t.Fatal(err)
	}
	q := ParseQuery(v)
	want := Query{Signature: "a", MsgSignature: "b", Timestamp: "1", Nonce: "2", EchoStr: "e+x", EncryptType: "aes", OpenID: "o"}
	if q != want {
		t.Fatalf("ParseQuery = %+v, want %+v", q, want)
	}
	if back := ParseQuery(q.Values()); back != q {
		t.Fatalf("Values round trip = %+v", back)
	}
}
