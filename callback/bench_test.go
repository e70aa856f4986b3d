package callback

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// alwaysNew is a Store that never finds a duplicate, so every iteration of
// the benchmark goes the whole way: the storage is not what is measured.
type alwaysNew struct{}

func (alwaysNew) Get(context.Context, string) ([]byte, error) { return nil, nil }
func (alwaysNew) PutIfAbsent(context.Context, string, []byte, time.Duration) (bool, error) {
	return true, nil
}
func (alwaysNew) CompareAndSwap(context.Context, string, []byte, []byte, time.Duration) (bool, error) {
	return true, nil
}

// BenchmarkTextMessageSafeMode measures one safe-mode text message end to
// end, as Handle does it: parse the envelope, verify msg_signature, check
// the timestamp, decrypt, parse the message, match a keyword rule, render
// the reply, encrypt and sign it. Recorded in BENCHMARKS.md.
func BenchmarkTextMessageSafeMode(b *testing.B) {
	d, err := NewDispatcher(echoRules)
	if err != nil {
		b.Fatal(err)
	}
	s, err := New(alwaysNew{}, d, Config{
		Token: testToken, AppID: testAppID, EncodingAESKey: testKey,
		Now: func() time.Time { return testNow },
	})
	if err != nil {
		b.Fatal(err)
	}
	q, body := sealRequest(b, asSafe, testKey, testAppID, textXML("9001", "ping"), testTimestamp(), "1320562132")
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		ans, err := s.Handle(ctx, q, body)
		if err != nil {
			b.Fatal(err)
		}
		if len(ans.Body) < 200 {
			b.Fatalf("answer %q is not an encrypted reply", ans.Body)
		}
	}
}

// hostileBody is about 1 MiB of well-formed XML made of many small
// elements, the most work per byte for an XML parser, with an Encrypt
// element when encrypted.
func hostileBody(encrypted bool) []byte {
	var b strings.Builder
	b.WriteString("<xml><ToUserName><![CDATA[" + testAccount + "]]></ToUserName><MsgType>text</MsgType>")
	for b.Len() < MaxBodyBytes-200 {
		b.WriteString("<a>x</a>")
	}
	if encrypted {
		b.WriteString("<Encrypt><![CDATA[" + sampleEncrypt + "]]></Encrypt>")
	}
	b.WriteString("</xml>")
	return []byte(b.String())
}

// BenchmarkBadSignature1MiB measures what an anonymous request with a
// wrong signature and a 1 MiB body costs: it must be refused before the
// body is parsed (the plaintext signature covers no body; msg_signature
// needs only the Encrypt value).
func BenchmarkBadSignature1MiB(b *testing.B) {
	ts := testTimestamp()
	for _, tt := range []struct {
		name string
		key  string
		q    Query
	}{
		{"plaintext", "", Query{Signature: strings.Repeat("0", 40), Timestamp: ts, Nonce: "1"}},
		{"encrypted", testKey, Query{MsgSignature: strings.Repeat("0", 40), Timestamp: ts, Nonce: "1", EncryptType: "aes"}},
	} {
		b.Run(tt.name, func(b *testing.B) {
			d, err := NewDispatcher(echoRules)
			if err != nil {
				b.Fatal(err)
			}
			s, err := New(alwaysNew{}, d, Config{
				Token: testToken, AppID: testAppID, EncodingAESKey: tt.key,
				Now: func() time.Time { return testNow },
			})
			if err != nil {
				b.Fatal(err)
			}
			body := hostileBody(tt.key != "")
			ctx := context.Background()
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.Handle(ctx, tt.q, body); !errors.Is(err, ErrSignature) {
					b.Fatalf("err %v, want ErrSignature", err)
				}
			}
		})
	}
}
