package callback

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// observations records what Config.Observe is told.
type observations struct {
	mu  sync.Mutex
	got []Observation
}

func (o *observations) add(ob Observation) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.got = append(o.got, ob)
}

func (o *observations) last(t *testing.T) Observation {
	t.Helper()
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.got) == 0 {
		t.Fatal("no observation")
	}
	return o.got[len(o.got)-1]
}

// Every POSTed push is observed once, with how it was answered and never
// what it said.
func TestObserveOutcomes(t *testing.T) {
	obs := &observations{}
	s := newTestService(t, echoRules, func(c *Config) { c.Observe = obs.add })
	ts := testTimestamp()
	handle := func(q Query, body string) {
		t.Helper()
		if _, err := s.Handle(t.Context(), q, []byte(body)); err != nil {
			t.Fatal(err)
		}
	}

	q, body := sealRequest(t, asSafe, testKey, testAppID, textXML("8001", "ping"), ts, "1")
	handle(q, string(body))
	if got, want := obs.last(t), (Observation{MsgType: "text", Mode: "safe", Outcome: OutcomeReplied}); got != want {
		t.Fatalf("reply: %+v, want %+v", got, want)
	}
	handle(q, string(body))
	if got, want := obs.last(t), (Observation{MsgType: "text", Mode: "safe", Outcome: OutcomeDuplicate}); got != want {
		t.Fatalf("retry: %+v, want %+v", got, want)
	}
	q, body = sealRequest(t, asCompatible, testKey, testAppID, eventXML("unsubscribe", testNow.Unix(), ""), ts, "2")
	handle(q, string(body))
	if got, want := obs.last(t), (Observation{MsgType: "event", Event: "unsubscribe", Mode: "compatible", Outcome: OutcomeEmpty}); got != want {
		t.Fatalf("no reply: %+v, want %+v", got, want)
	}

	// A subscriber that does not answer before the deadline, however
	// long the deadline: the deadline's "success". Its own service, so the
	// short deadline cannot make the others late on a busy machine.
	late := newTestService(t, echoRules, func(c *Config) { c.Observe = obs.add; c.ReplyTimeout = 50 * time.Millisecond })
	release := make(chan struct{})
	defer close(release)
	late.SetSubscriber(subscriberFunc(func(ctx context.Context, _ *Message) (*Reply, bool, error) {
		<-ctx.Done()
		<-release
		return nil, true, nil
	}))
	q, body = sealRequest(t, asSafe, testKey, testAppID, textXML("8002", "ping"), ts, "3")
	if _, err := late.Handle(t.Context(), q, body); err != nil {
		t.Fatal(err)
	}
	if got, want := obs.last(t), (Observation{MsgType: "text", Mode: "safe", Outcome: OutcomeLate}); got != want {
		t.Fatalf("late: %+v, want %+v", got, want)
	}

	bad := plainRequest("not the token", ts, "4")
	if _, err := s.Handle(t.Context(), bad, []byte(textXML("8003", "ping"))); !errors.Is(err, ErrSignature) {
		t.Fatalf("bad signature: %v", err)
	}
	got := obs.last(t)
	if got.Outcome != OutcomeRefused || got.MsgType != "" || got.Mode != "" || !errors.Is(got.Err, ErrSignature) {
		t.Fatalf("refused: %+v", got)
	}
	obs.mu.Lock()
	n := len(obs.got)
	obs.mu.Unlock()
	if n != 5 {
		t.Fatalf("%d observations for 5 pushes", n)
	}

	// Verification is not a push.
	v := plainRequest(testToken, ts, "5")
	v.EchoStr = "echo"
	if _, err := s.Verify(v); err != nil {
		t.Fatal(err)
	}
	if obs.last(t).Outcome != OutcomeRefused {
		t.Fatal("a verification was observed as a push")
	}
}
