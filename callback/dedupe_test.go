package callback

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/100steps/wxappliance/appliance/logtest"
	"github.com/100steps/wxappliance/kv/kvtest"
)

// Dedupe across a crash. Reply deadlines are a minute: a retry that must
// wait for an answer gets it through events, never because the machine was
// quick, and a test that went wrong fails on the answer, not on a clock.
const crashReplyTimeout = time.Minute

// crashMessage is the message in flight at the crash, as WeChat sends it
// and every retry repeats it.
func crashMessage(t *testing.T) (Query, []byte, string) {
	t.Helper()
	xml := textXML("9100", "ping")
	q, body := sealRequest(t, asSafe, testKey, testAppID, xml, testTimestamp(), "1")
	m, err := ParseMessage([]byte(xml))
	if err != nil {
		t.Fatal(err)
	}
	return q, body, dedupeKey(m)
}

// instanceService is one process's Service on a shared store.
type instanceService struct {
	*Service
	logs       *logtest.Buffer
	dispatches atomic.Int32
	entered    chan struct{} // a value each time the subscriber is called
}

// newInstanceService returns a Service on st as the process inst would
// run it (nil: the default, this process), whose subscriber counts
// dispatches and answers with its name, after waiting on gate if not nil.
func newInstanceService(t *testing.T, st Store, inst Instances, name string, gate <-chan struct{}) *instanceService {
	t.Helper()
	d, err := NewDispatcher(Rules{})
	if err != nil {
		t.Fatal(err)
	}
	is := &instanceService{logs: &logtest.Buffer{}, entered: make(chan struct{}, 16)}
	is.Service, err = New(st, d, Config{
		Token: testToken, AppID: testAppID, EncodingAESKey: testKey,
		Now: func() time.Time { return testNow }, Random: fixedRandom(7),
		ReplyTimeout: crashReplyTimeout, Instances: inst,
		Logger: slog.New(slog.NewTextHandler(is.logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	is.SetSubscriber(subscriberFunc(func(context.Context, *Message) (*Reply, bool, error) {
		is.dispatches.Add(1)
		is.entered <- struct{}{}
		if gate != nil {
			<-gate
		}
		return &Reply{Type: ReplyText, Content: "answered by " + name}, true, nil
	}))
	return is
}

// crashMidDispatch has the process "A" (inst) take the message and stall
// in its subscriber, the state a kill -9 leaves in the store: A's claim
// and no answer. finish releases A and waits for its late answer (at the
// latest when the test ends, before the store closes).
func crashMidDispatch(t *testing.T, st Store, inst Instances, q Query, body []byte) (a *instanceService, finish func()) {
	t.Helper()
	release := make(chan struct{})
	a = newInstanceService(t, st, inst, "A", release)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, err := a.Handle(context.Background(), q, body); err != nil {
			t.Error(err)
		}
	}()
	var once sync.Once
	finish = func() { once.Do(func() { close(release); <-done }) }
	t.Cleanup(finish)
	select {
	case <-a.entered: // A is dispatching: its claim is stored
	case <-done:
		t.Fatal("A answered instead of stalling")
	}
	return a, finish
}

// handleAsync runs one delivery in the background.
func handleAsync(s *instanceService, q Query, body []byte) <-chan *Answer {
	out := make(chan *Answer, 1)
	go func() {
		ans, err := s.Handle(context.Background(), q, body)
		if err != nil {
			ans = nil
		}
		out <- ans
	}()
	return out
}

// answerText decrypts an encrypted answer and returns its text.
func answerText(t *testing.T, body []byte) string {
	t.Helper()
	m, err := ParseMessage(openReply(t, body, testKey, testAppID))
	if err != nil {
		t.Fatal(err)
	}
	return m.Content
}

// After a crash, WeChat's retry reaches the restarted process, which sees
// the dead process's claim, takes it over and dispatches the message again;
// later retries get that answer from the store.
func TestClaimOfCrashedProcessIsTakenOver(t *testing.T) {
	st := kvtest.Badger(t)
	q, body, key := crashMessage(t)
	a, finishA := crashMidDispatch(t, st, soleInstance("A"), q, body)
	if rec, err := st.Get(t.Context(), key); err != nil || string(rec) != "pA" {
		t.Fatalf("A's claim is %q, %v; want pA", rec, err)
	}

	b := newInstanceService(t, st, soleInstance("B"), "B", nil)
	first, err := b.Handle(t.Context(), q, body)
	if err != nil {
		t.Fatal(err)
	}
	if first.Duplicate || answerText(t, first.Body) != "answered by B" || b.dispatches.Load() != 1 {
		t.Fatalf("retry after the crash: duplicate %v, %d dispatches", first.Duplicate, b.dispatches.Load())
	}
	if !strings.Contains(b.logs.String(), "took over the claim of a dead instance") {
		t.Fatalf("takeover not logged: %s", b.logs)
	}
	again, err := b.Handle(t.Context(), q, body)
	if err != nil {
		t.Fatal(err)
	}
	if !again.Duplicate || !bytes.Equal(again.Body, first.Body) || b.dispatches.Load() != 1 {
		t.Fatalf("second retry: duplicate %v, same answer %v, %d dispatches",
			again.Duplicate, bytes.Equal(again.Body, first.Body), b.dispatches.Load())
	}

	// Were A not dead after all, its late answer would not replace B's.
	finishA()
	rec, err := st.Get(t.Context(), key)
	if err != nil || !bytes.Equal(rec, append([]byte{'d'}, first.Body...)) {
		t.Errorf("after A's late answer the record is %.40q, %v", rec, err)
	}
	if !strings.Contains(a.logs.String(), "taken over by another instance") {
		t.Errorf("A's dropped answer not logged: %s", a.logs)
	}
}

// A claim written by the previous version, a bare "p", names no process:
// it is a dead one's.
func TestLegacyClaimIsTakenOver(t *testing.T) {
	st := kvtest.Badger(t)
	q, body, key := crashMessage(t)
	if ok, err := st.PutIfAbsent(t.Context(), key, []byte("p"), time.Hour); !ok || err != nil {
		t.Fatal(ok, err)
	}
	b := newInstanceService(t, st, nil, "B", nil)
	ans, err := b.Handle(t.Context(), q, body)
	if err != nil {
		t.Fatal(err)
	}
	if ans.Duplicate || answerText(t, ans.Body) != "answered by B" || b.dispatches.Load() != 1 {
		t.Fatalf("duplicate %v, %d dispatches", ans.Duplicate, b.dispatches.Load())
	}
}

// barrierStore holds every Get that reads hold until n of them have, so
// that n retries all see the dead claim before any takes it over.
type barrierStore struct {
	Store
	hold    []byte
	n       int
	mu      sync.Mutex
	arrived int
	open    chan struct{}
}

func (b *barrierStore) Get(ctx context.Context, key string) ([]byte, error) {
	v, err := b.Store.Get(ctx, key)
	if err != nil || !bytes.Equal(v, b.hold) {
		return v, err
	}
	b.mu.Lock()
	if b.arrived++; b.arrived == b.n {
		close(b.open)
	}
	b.mu.Unlock()
	select {
	case <-b.open:
	case <-time.After(time.Minute): // a bug, not a slow machine: counts will show it
	}
	return v, err
}

// fakeInstances is Instances with a fixed set of live ids, telling the
// test whenever it is asked.
type fakeInstances struct {
	self  string
	alive map[string]bool
	err   error
	asked chan string
}

func (f *fakeInstances) Self() string { return f.self }

func (f *fakeInstances) Alive(_ context.Context, id string) (bool, error) {
	if f.asked != nil {
		select {
		case f.asked <- id:
		default:
		}
	}
	return f.alive[id], f.err
}

// Retries racing after a crash, in one process or several sharing the
// store, all see the dead claim; exactly one takes it over and dispatches,
// and every retry gets its answer.
func TestTakeoverExactlyOnce(t *testing.T) {
	for _, processes := range []int{1, 3} {
		t.Run(fmt.Sprintf("%d processes", processes), func(t *testing.T) {
			st := kvtest.Badger(t)
			q, body, _ := crashMessage(t)
			crashMidDispatch(t, st, soleInstance("A"), q, body)
			const retries = 6
			bs := &barrierStore{Store: st, hold: []byte("pA"), n: retries, open: make(chan struct{})}
			alive := map[string]bool{}
			for i := range processes {
				alive[fmt.Sprint("B", i)] = true
			}
			var services []*instanceService
			for i := range processes {
				id := fmt.Sprint("B", i)
				services = append(services, newInstanceService(t, bs, &fakeInstances{self: id, alive: alive}, id, nil))
			}
			answers := make([]*Answer, retries)
			var wg sync.WaitGroup
			for i := range retries {
				wg.Go(func() {
					ans, err := services[i%processes].Handle(context.Background(), q, body)
					if err != nil {
						t.Error(err)
						return
					}
					answers[i] = ans
				})
			}
			wg.Wait()
			var dispatches, fresh int32
			for _, s := range services {
				dispatches += s.dispatches.Load()
			}
			for _, ans := range answers {
				if ans == nil {
					t.FailNow()
				}
				if !ans.Duplicate {
					fresh++
				}
				if !bytes.Equal(ans.Body, answers[0].Body) {
					t.Fatalf("retries got different answers")
				}
			}
			if dispatches != 1 || fresh != 1 {
				t.Fatalf("%d dispatches, %d answers not from the store; want 1 and 1", dispatches, fresh)
			}
			if !strings.HasPrefix(answerText(t, answers[0].Body), "answered by B") {
				t.Fatalf("answer %q", answerText(t, answers[0].Body))
			}
		})
	}
}

// While the claimer is alive, or its liveness cannot be told, a retry waits
// for its answer as before, and never dispatches.
func TestLiveClaimerIsWaitedFor(t *testing.T) {
	tests := map[string]*fakeInstances{
		"alive":   {self: "B", alive: map[string]bool{"A": true}},
		"unknown": {self: "B", err: errors.New("registry down")},
	}
	for name, inst := range tests {
		t.Run(name, func(t *testing.T) {
			st := kvtest.Badger(t)
			q, body, _ := crashMessage(t)
			release := make(chan struct{})
			a := newInstanceService(t, st, soleInstance("A"), "A", release)
			aDone := handleAsync(a, q, body)
			<-a.entered

			inst.asked = make(chan string, 1)
			b := newInstanceService(t, st, inst, "B", nil)
			bDone := handleAsync(b, q, body)
			if id := <-inst.asked; id != "A" {
				t.Fatalf("asked about %q", id)
			}
			close(release) // A answers while B waits
			first, retry := <-aDone, <-bDone
			if first == nil || retry == nil {
				t.FailNow()
			}
			if !retry.Duplicate || !bytes.Equal(retry.Body, first.Body) || b.dispatches.Load() != 0 {
				t.Fatalf("retry: duplicate %v, same answer %v, %d dispatches by B",
					retry.Duplicate, bytes.Equal(retry.Body, first.Body), b.dispatches.Load())
			}
			if answerText(t, retry.Body) != "answered by A" {
				t.Fatalf("answer %q", answerText(t, retry.Body))
			}
		})
	}
}

// Services in one process share its instance id by default, so one built
// while another is still answering (a rebuilt Service, a second listener)
// waits for it instead of taking its claim over.
func TestDefaultInstanceIsTheProcess(t *testing.T) {
	st := kvtest.Badger(t)
	q, body, key := crashMessage(t)
	release := make(chan struct{})
	a := newInstanceService(t, st, nil, "A", release)
	aDone := handleAsync(a, q, body)
	<-a.entered
	claim := "p" + processInstance()
	if rec, _ := st.Get(t.Context(), key); string(rec) != claim {
		t.Fatalf("claim %q, want p + this process's id", rec)
	}

	// B sees A's claim twice, so it has decided at least once to wait.
	seen := &watchStore{Store: st, hold: []byte(claim), seen: make(chan struct{}, 2)}
	b := newInstanceService(t, seen, nil, "B", nil)
	bDone := handleAsync(b, q, body)
	<-seen.seen
	<-seen.seen
	if rec, _ := st.Get(t.Context(), key); string(rec) != claim {
		t.Fatalf("claim became %q while A was answering", rec)
	}
	close(release)
	first, retry := <-aDone, <-bDone
	if first == nil || retry == nil || !retry.Duplicate || !bytes.Equal(retry.Body, first.Body) || b.dispatches.Load() != 0 {
		t.Fatalf("retry %+v, %d dispatches by B", retry, b.dispatches.Load())
	}
}

// watchStore tells the test each time a Get reads hold.
type watchStore struct {
	Store
	hold []byte
	seen chan struct{}
}

func (w *watchStore) Get(ctx context.Context, key string) ([]byte, error) {
	v, err := w.Store.Get(ctx, key)
	if err == nil && bytes.Equal(v, w.hold) {
		select {
		case w.seen <- struct{}{}:
		default:
		}
	}
	return v, err
}

func TestNewRejectsAnonymousInstance(t *testing.T) {
	d, _ := NewDispatcher(Rules{})
	_, err := New(kvtest.Badger(t), d, Config{Token: testToken, Instances: &fakeInstances{}})
	if err == nil {
		t.Fatal("an Instances without a Self accepted")
	}
}
