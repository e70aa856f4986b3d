package callback

import (
	"context"
	"testing"
	"time"
)

// alwaysNew is a Store that never finds a duplicate, so every iteration of
// the benchmark goes the whole way: the storage is not what is measured.
type alwaysNew struct{}

func (alwaysNew) Get(context.Context, string) ([]byte, error) { return nil, nil }
func (alwaysNew) Put(context.Context, string, []byte, time.Duration) error {
	return nil
}
func (alwaysNew) PutIfAbsent(context.Context, string, []byte, time.Duration) (bool, error) {
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
