package callback

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/100steps/wxappliance/kv"
	"github.com/100steps/wxappliance/kv/kvtest"
)

// A process killed mid-stream (no Close, claims lost with its memory): the
// next process on the same directory answers retries of what was answered
// with the stored answer, byte for byte, without dispatching, and
// dispatches again, once, what was still being answered.
func TestLocalStoreAcrossCrash(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "callback")
	journal := func() *kv.Journal {
		j, err := kv.OpenJournal(dir, kv.JournalOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { j.Close() })
		return j
	}
	answeredQ, answeredBody, _ := crashMessage(t)
	pendingQ, pendingBody := sealRequest(t, asSafe, testKey, testAppID, textXML("9101", "ping"), testTimestamp(), "2")

	// Process A answers the first message, then stalls in its subscriber
	// on the second: its claim exists only in A's memory.
	storeA := LocalStore(journal())
	a, finishA := crashMidDispatch(t, storeA, nil, answeredQ, answeredBody)
	finishA()
	first, err := a.Handle(t.Context(), answeredQ, answeredBody) // a retry to A
	if err != nil || !first.Duplicate {
		t.Fatalf("retry to A: %+v %v", first, err)
	}
	crashMidDispatch(t, storeA, nil, pendingQ, pendingBody)

	// Process B starts on the same directory.
	b := newInstanceService(t, LocalStore(journal()), nil, "B", nil)
	retry, err := b.Handle(t.Context(), answeredQ, answeredBody)
	if err != nil {
		t.Fatal(err)
	}
	if !retry.Duplicate || !bytes.Equal(retry.Body, first.Body) || b.dispatches.Load() != 0 {
		t.Fatalf("retry of an answered message after the crash: duplicate %v, same bytes %v, %d dispatches",
			retry.Duplicate, bytes.Equal(retry.Body, first.Body), b.dispatches.Load())
	}
	again, err := b.Handle(t.Context(), pendingQ, pendingBody)
	if err != nil {
		t.Fatal(err)
	}
	if again.Duplicate || answerText(t, again.Body) != "answered by B" || b.dispatches.Load() != 1 {
		t.Fatalf("retry of the message in flight: duplicate %v, %d dispatches", again.Duplicate, b.dispatches.Load())
	}
	last, err := b.Handle(t.Context(), pendingQ, pendingBody)
	if err != nil || !last.Duplicate || !bytes.Equal(last.Body, again.Body) || b.dispatches.Load() != 1 {
		t.Fatalf("second retry: %+v %v, %d dispatches", last, err, b.dispatches.Load())
	}
}

// Services of one process on one journal share its claims: one built while
// another answers waits for that answer.
func TestLocalStoreSharedInProcess(t *testing.T) {
	j := testJournal(t)
	q, body, _ := crashMessage(t)
	release := make(chan struct{})
	a := newInstanceService(t, LocalStore(j), nil, "A", release)
	aDone := handleAsync(a, q, body)
	<-a.entered
	// B sees A's claim before A answers, so it has decided to wait.
	seen := &watchStore{Store: LocalStore(j), hold: []byte("p" + processInstance()), seen: make(chan struct{}, 1)}
	b := newInstanceService(t, seen, nil, "B", nil)
	bDone := handleAsync(b, q, body)
	<-seen.seen
	close(release)
	first, retry := <-aDone, <-bDone
	if first == nil || retry == nil || !retry.Duplicate || !bytes.Equal(retry.Body, first.Body) || b.dispatches.Load() != 0 {
		t.Fatalf("retry %+v, %d dispatches by B", retry, b.dispatches.Load())
	}
}

// refusingJournal refuses every write, as on a full disk.
type refusingJournal struct {
	*kv.Journal
	err error
}

func (j refusingJournal) Put(context.Context, string, []byte, time.Duration) error { return j.err }

// An answer the journal refuses is sent and kept in memory, so that this
// process's retries still get it rather than a second dispatch. A failure
// is logged with each message; a full disk is not, since the store reports
// it once.
func TestLocalStoreJournalRefuses(t *testing.T) {
	for _, tc := range []struct {
		name   string
		err    error
		logged bool
	}{
		{"failure", errors.New("input/output error"), true},
		{"full disk", fmt.Errorf("kv: journal: %w", kv.ErrNoSpace), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newInstanceService(t, LocalStore(refusingJournal{testJournal(t), tc.err}), nil, "A", nil)
			q, body, _ := crashMessage(t)
			first, err := s.Handle(t.Context(), q, body)
			if err != nil {
				t.Fatal(err)
			}
			retry, err := s.Handle(t.Context(), q, body)
			if err != nil {
				t.Fatal(err)
			}
			if !retry.Duplicate || !bytes.Equal(retry.Body, first.Body) || s.dispatches.Load() != 1 {
				t.Fatalf("retry: duplicate %v, same bytes %v, %d dispatches", retry.Duplicate, bytes.Equal(retry.Body, first.Body), s.dispatches.Load())
			}
			if got := strings.Contains(s.logs.String(), "answer kept in memory only"); got != tc.logged {
				t.Fatalf("refusal logged %v, want %v: %s", got, tc.logged, s.logs)
			}
		})
	}
}

// Records kept in the store by an earlier version move to the journal:
// answers keep answering retries byte for byte, claims (a dead process's)
// are dropped, and other keys are left alone.
func TestImportAnswers(t *testing.T) {
	st := kvtest.Badger(t)
	q, body, key := crashMessage(t)
	old := newInstanceService(t, st, soleInstance("old"), "old", nil)
	first, err := old.Handle(t.Context(), q, body)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if ok, err := st.PutIfAbsent(ctx, dedupePrefix+"pending", []byte("pold"), time.Hour); !ok || err != nil {
		t.Fatal(ok, err)
	}
	if err := st.Put(ctx, "sess/x", []byte("keep"), time.Hour); err != nil {
		t.Fatal(err)
	}
	j, err := st.Journal("callback")
	if err != nil {
		t.Fatal(err)
	}
	n, err := ImportAnswers(ctx, st, j)
	if err != nil || n != 1 {
		t.Fatalf("ImportAnswers = %d, %v; want 1 answer moved", n, err)
	}
	for _, k := range []string{key, dedupePrefix + "pending"} {
		if _, err := st.Get(ctx, k); !errors.Is(err, kv.ErrNotFound) {
			t.Errorf("%s still in the store: %v", k, err)
		}
	}
	if v, err := st.Get(ctx, "sess/x"); err != nil || string(v) != "keep" {
		t.Errorf("another key was touched: %q %v", v, err)
	}

	upgraded := newInstanceService(t, LocalStore(j), nil, "new", nil)
	retry, err := upgraded.Handle(ctx, q, body)
	if err != nil {
		t.Fatal(err)
	}
	if !retry.Duplicate || !bytes.Equal(retry.Body, first.Body) || upgraded.dispatches.Load() != 0 {
		t.Fatalf("retry after the upgrade: duplicate %v, same bytes %v, %d dispatches",
			retry.Duplicate, bytes.Equal(retry.Body, first.Body), upgraded.dispatches.Load())
	}
	if n, err := ImportAnswers(ctx, st, j); err != nil || n != 0 {
		t.Fatalf("a second import moved %d, %v", n, err)
	}
}
