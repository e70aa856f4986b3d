package oauth_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/100steps/wxappliance/appliance/poll"
	"github.com/100steps/wxappliance/kv"
	"github.com/100steps/wxappliance/kv/kvtest"
	"github.com/100steps/wxappliance/oauth"
)

func TestMarginClampedToLifetime(t *testing.T) {
	tests := []struct {
		name      string
		expiresIn time.Duration
		margin    time.Duration
	}{
		{"normal", 7200 * time.Second, 5 * time.Minute},
		{"lifetime shorter than margin", 60 * time.Second, 5 * time.Minute},
		{"one second", time.Second, 5 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := time.Now()
			cred := oauth.NewCredential(oauth.CredentialConfig{
				Name: "t", Key: "cred/t", Store: openStore(t, t.TempDir()), Margin: tt.margin,
				Now: func() time.Time { return now },
				Fetch: func(context.Context) (string, time.Duration, error) {
					return "v", tt.expiresIn, nil
				},
			})
			tok, err := cred.Get(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if !tok.RefreshAt.After(now) {
				t.Fatalf("refresh at %v is not after now %v: the margin ate the lifetime", tok.RefreshAt, now)
			}
			if !tok.RefreshAt.Before(tok.ExpiresAt) {
				t.Fatalf("refresh at %v is not before expiry %v", tok.RefreshAt, tok.ExpiresAt)
			}
			if want := now.Add(tt.expiresIn); !tok.ExpiresAt.Equal(want) {
				t.Fatalf("expires at %v, want %v", tok.ExpiresAt, want)
			}
		})
	}
}

func TestCredentialRejectsEmptyAnswer(t *testing.T) {
	for name, fetch := range map[string]oauth.FetchFunc{
		"empty value":      func(context.Context) (string, time.Duration, error) { return "", time.Hour, nil },
		"zero expires_in":  func(context.Context) (string, time.Duration, error) { return "v", 0, nil },
		"negative expires": func(context.Context) (string, time.Duration, error) { return "v", -time.Second, nil },
	} {
		t.Run(name, func(t *testing.T) {
			cred := oauth.NewCredential(oauth.CredentialConfig{Name: "t", Key: "cred/t", Store: openStore(t, t.TempDir()), Fetch: fetch})
			if _, err := cred.Get(context.Background()); !errors.Is(err, oauth.ErrBadResponse) {
				t.Fatalf("err = %v, want ErrBadResponse", err)
			}
		})
	}
}

func TestBackgroundRefresh(t *testing.T) {
	var n atomic.Int32
	cred := oauth.NewCredential(oauth.CredentialConfig{
		Name: "t", Key: "cred/t", Store: openStore(t, t.TempDir()),
		Fetch: func(context.Context) (string, time.Duration, error) {
			return "v" + string(rune('0'+n.Add(1))), 2 * time.Second, nil
		},
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { cred.Run(ctx); close(done) }()

	// The loop fetches at once, then again before the 2s lifetime ends.
	poll.Until(t, "the background loop to fetch a 2s credential again", func() bool { return n.Load() >= 2 })
	cancel()
	<-done
	tok, ok := cred.Peek()
	if !ok || tok.Value == "v1" {
		t.Fatalf("peek = %q, %v; want the refreshed value", tok.Value, ok)
	}
}

func TestCallerGivingUpDoesNotFailOthers(t *testing.T) {
	release := make(chan struct{})
	cred := oauth.NewCredential(oauth.CredentialConfig{
		Name: "t", Key: "cred/t", Store: openStore(t, t.TempDir()),
		Fetch: func(context.Context) (string, time.Duration, error) {
			<-release
			return "v", time.Hour, nil
		},
	})
	impatient, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	result := make(chan error, 1)
	go func() {
		_, err := cred.Get(context.Background())
		result <- err
	}()
	if _, err := cred.Get(impatient); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("impatient caller: %v", err)
	}
	close(release)
	if err := <-result; err != nil {
		t.Fatalf("patient caller failed because another gave up: %v", err)
	}
}

// Several instances sharing one store and one bus, on every kvtest backend.
func forEachBackend(t *testing.T, test func(t *testing.T, join func() (kv.Store, kv.Bus))) {
	for _, b := range kvtest.Backends {
		t.Run(b.Name, func(t *testing.T) { test(t, b.Open(t)) })
	}
}

const (
	credKey  = "cred/t"
	leaseKey = credKey + "/lease"
	lifetime = 2 * time.Hour
	longWait = 30 * time.Second
)

// fakeClock is a clock that moves only when told; After channels fire when
// it passes their deadline.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	pending []fakeTimer
}

type fakeTimer struct {
	at time.Time
	ch chan time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.now
		return ch
	}
	c.pending = append(c.pending, fakeTimer{at: c.now.Add(d), ch: ch})
	return ch
}

// Set moves the clock to t and fires the timers it passes.
func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
	kept := c.pending[:0]
	for _, p := range c.pending {
		if p.at.After(t) {
			kept = append(kept, p)
			continue
		}
		p.ch <- t
	}
	c.pending = kept
}

// Sleepers is how many timers are waiting.
func (c *fakeClock) Sleepers() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending)
}

// upstream counts fetches and answers v1, v2, ...; while gated, a fetch
// waits until the gate opens.
type fakeUpstream struct {
	n    atomic.Int64
	gate chan struct{}
	// check runs inside each fetch, for tests that look at the store then.
	check func(ctx context.Context)

	once  sync.Once
	begun chan struct{} // a wake-up after n grew
}

// begunSignal is the channel that wakes a waiter after a fetch began.
func (u *fakeUpstream) begunSignal() chan struct{} {
	u.once.Do(func() { u.begun = make(chan struct{}, 1) })
	return u.begun
}

func (u *fakeUpstream) fetch(ctx context.Context) (string, time.Duration, error) {
	i := u.n.Add(1)
	select {
	case u.begunSignal() <- struct{}{}:
	default: // a wake-up is pending already
	}
	if u.check != nil {
		u.check(ctx)
	}
	if u.gate != nil {
		select {
		case <-u.gate:
		case <-ctx.Done():
			return "", 0, ctx.Err()
		}
	}
	return fmt.Sprintf("v%d", i), lifetime, nil
}

// cluster starts n instances; with run, each has its Run loop going until
// the test ends.
func cluster(t *testing.T, join func() (kv.Store, kv.Bus), n int, clock *fakeClock, up *fakeUpstream, run bool, wrap func(kv.Store) kv.Store) []*oauth.Credential {
	t.Helper()
	creds := make([]*oauth.Credential, n)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	for i := range creds {
		store, bus := join()
		if wrap != nil {
			store = wrap(store)
		}
		creds[i] = oauth.NewCredential(oauth.CredentialConfig{
			Name: "t", Key: credKey, Store: store, Bus: bus, Instance: fmt.Sprintf("instance%d", i),
			Fetch: up.fetch, Now: clock.Now, After: clock.After,
		})
		if run {
			wg.Add(1)
			go func() { defer wg.Done(); creds[i].Run(ctx) }()
		}
	}
	return creds
}

// eventually polls cond until it holds or a generous deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	poll.Until(t, what, cond)
}

func totalFetches(creds []*oauth.Credential) int {
	n := 0
	for _, c := range creds {
		n += c.Fetches()
	}
	return n
}

func allPeek(creds []*oauth.Credential, want string) bool {
	for _, c := range creds {
		if tok, ok := c.Peek(); !ok || tok.Value != want {
			return false
		}
	}
	return true
}

// callAll runs call from perInstance goroutines on every instance at once
// and returns the values they got.
func callAll(t *testing.T, creds []*oauth.Credential, perInstance int, call func(ctx context.Context, c *oauth.Credential) (oauth.Token, error)) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), longWait)
	defer cancel()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var values []string
	for _, c := range creds {
		for range perInstance {
			wg.Add(1)
			go func() {
				defer wg.Done()
				tok, err := call(ctx, c)
				if err != nil {
					t.Error(err)
				}
				mu.Lock()
				values = append(values, tok.Value)
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	return values
}

func get(ctx context.Context, c *oauth.Credential) (oauth.Token, error) { return c.Get(ctx) }

func assertAll(t *testing.T, values []string, want string) {
	t.Helper()
	for i, v := range values {
		if v != want {
			t.Fatalf("caller %d got %q, want %q", i, v, want)
		}
	}
}

// openGateOnFetch opens up's gate once the first fetch has begun, so the
// other callers pile up behind it.
func openGateOnFetch(t *testing.T, up *fakeUpstream, fetches int64) {
	begun := up.begunSignal()
	go func() {
		for up.n.Load() < fetches {
			select {
			case <-begun:
			case <-t.Context().Done():
				return
			}
		}
		close(up.gate)
	}()
}

func storedValue(t *testing.T, store kv.Store) (oauth.Token, []byte) {
	t.Helper()
	raw, err := store.Get(context.Background(), credKey)
	if err != nil {
		t.Fatalf("stored credential: %v", err)
	}
	var tok oauth.Token
	if err := json.Unmarshal(raw, &tok); err != nil {
		t.Fatal(err)
	}
	return tok, raw
}

func assertNoLease(t *testing.T, store kv.Store) {
	t.Helper()
	if _, err := store.Get(context.Background(), leaseKey); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("lease after the fetch: err = %v, want ErrNotFound (released)", err)
	}
}

func TestClusterColdStartFetchesOnce(t *testing.T) {
	forEachBackend(t, func(t *testing.T, join func() (kv.Store, kv.Bus)) {
		up := &fakeUpstream{gate: make(chan struct{})}
		// Run loops warm up at once, as the appliance starts them, while
		// requests arrive on every instance.
		creds := cluster(t, join, 5, newFakeClock(), up, true, nil)
		openGateOnFetch(t, up, 1)
		values := callAll(t, creds, 20, func(ctx context.Context, c *oauth.Credential) (oauth.Token, error) {
			return c.Get(ctx)
		})
		assertAll(t, values, "v1")
		if n := up.n.Load(); n != 1 {
			t.Fatalf("%d upstream fetches for a cold start of 5 instances, want 1", n)
		}
		if n := totalFetches(creds); n != 1 {
			t.Fatalf("instances report %d fetches, want 1", n)
		}
		store, _ := join()
		if tok, _ := storedValue(t, store); tok.Value != "v1" {
			t.Fatalf("stored %q, want v1", tok.Value)
		}
		assertNoLease(t, store)
	})
}

func TestClusterInvalidateReplacesOnce(t *testing.T) {
	for _, run := range []bool{true, false} {
		t.Run(fmt.Sprintf("run=%v", run), func(t *testing.T) {
			forEachBackend(t, func(t *testing.T, join func() (kv.Store, kv.Bus)) {
				up := &fakeUpstream{}
				creds := cluster(t, join, 5, newFakeClock(), up, run, nil)
				assertAll(t, callAll(t, creds, 1, get), "v1")

				up.gate = make(chan struct{})
				openGateOnFetch(t, up, 2)
				values := callAll(t, creds, 10, func(ctx context.Context, c *oauth.Credential) (oauth.Token, error) {
					return c.Invalidate(ctx, "v1")
				})
				assertAll(t, values, "v2")
				if n := up.n.Load(); n != 2 {
					t.Fatalf("%d fetches for 50 reports of one stale token on 5 instances, want 2", n)
				}
				// Everyone now hands out v2, and reporting v1 again changes nothing.
				assertAll(t, callAll(t, creds, 1, get), "v2")
				assertAll(t, callAll(t, creds, 1, func(ctx context.Context, c *oauth.Credential) (oauth.Token, error) {
					return c.Invalidate(ctx, "v1")
				}), "v2")
				if n := up.n.Load(); n != 2 {
					t.Fatalf("a stale report after the replacement fetched again: %d fetches", n)
				}
				store, _ := join()
				if tok, _ := storedValue(t, store); tok.Value != "v2" {
					t.Fatalf("stored %q, want v2", tok.Value)
				}
				assertNoLease(t, store)
			})
		})
	}
}

func TestClusterInvalidateKeepsNewerStoredValue(t *testing.T) {
	forEachBackend(t, func(t *testing.T, join func() (kv.Store, kv.Bus)) {
		up := &fakeUpstream{}
		clock := newFakeClock()
		// No Run: b is not told of a's change and must find it in the store.
		creds := cluster(t, join, 2, clock, up, false, nil)
		a, b := creds[0], creds[1]
		ctx := context.Background()
		assertAll(t, callAll(t, creds, 1, get), "v1")
		bFetches := b.Fetches()
		if tok, err := a.Invalidate(ctx, "v1"); err != nil || tok.Value != "v2" {
			t.Fatalf("a.Invalidate = %q, %v; want v2", tok.Value, err)
		}
		tok, err := b.Invalidate(ctx, "v1")
		if err != nil || tok.Value != "v2" {
			t.Fatalf("b.Invalidate = %q, %v; want the stored v2", tok.Value, err)
		}
		if b.Fetches() != bFetches || up.n.Load() != 2 {
			t.Fatalf("b fetched %d times (%d in all) although the store held a newer value", b.Fetches()-bFetches, up.n.Load())
		}

		// The replacement is a compare-and-swap against the record that
		// held the stale value: when another writer replaces that record
		// during the fetch, its record stays and is the answer.
		store, _ := join()
		up.gate = make(chan struct{})
		result := make(chan oauth.Token, 1)
		go func() {
			tok, err := a.Invalidate(ctx, "v2")
			if err != nil {
				t.Error(err)
			}
			result <- tok
		}()
		eventually(t, "the fetch replacing v2 never started", func() bool { return up.n.Load() == 3 })
		now := clock.Now()
		other, _ := json.Marshal(oauth.Token{Value: "other", ExpiresAt: now.Add(time.Hour), RefreshAt: now.Add(50 * time.Minute)})
		if err := store.Put(ctx, credKey, other, time.Hour); err != nil {
			t.Fatal(err)
		}
		close(up.gate)
		if tok := <-result; tok.Value != "other" {
			t.Fatalf("invalidate returned %q, want the record stored meanwhile", tok.Value)
		}
		if _, raw := storedValue(t, store); !bytes.Equal(raw, other) {
			t.Fatalf("stored %s, want the other writer's record untouched", raw)
		}
		assertNoLease(t, store)
	})
}

func TestClusterCrashedHoldersLeaseExpires(t *testing.T) {
	forEachBackend(t, func(t *testing.T, join func() (kv.Store, kv.Bus)) {
		store, _ := join()
		crashed := []byte(`{"owner":"crashed","nonce":"x"}`)
		if ok, err := store.PutIfAbsent(context.Background(), leaseKey, crashed, time.Second); err != nil || !ok {
			t.Fatalf("planting the lease: %v, %v", ok, err)
		}
		var holders []string
		var mu sync.Mutex
		up := &fakeUpstream{check: func(ctx context.Context) {
			// The fetch runs under a lease of its own: the crashed one is gone.
			held, err := store.Get(ctx, leaseKey)
			mu.Lock()
			defer mu.Unlock()
			if err != nil || bytes.Equal(held, crashed) {
				holders = append(holders, fmt.Sprintf("lease %s, %v", held, err))
				return
			}
			holders = append(holders, "own")
		}}
		creds := cluster(t, join, 3, newFakeClock(), up, false, nil)
		assertAll(t, callAll(t, creds, 5, get), "v1")
		if n := up.n.Load(); n != 1 {
			t.Fatalf("%d fetches after a crashed holder's lease expired, want 1", n)
		}
		if len(holders) != 1 || holders[0] != "own" {
			t.Fatalf("fetched under %v, want under its own lease", holders)
		}
		assertNoLease(t, store)
	})
}

func TestClusterLeaseReleasedByOwnerOnly(t *testing.T) {
	forEachBackend(t, func(t *testing.T, join func() (kv.Store, kv.Bus)) {
		store, _ := join()
		up := &fakeUpstream{gate: make(chan struct{})}
		cred := cluster(t, join, 1, newFakeClock(), up, false, nil)[0]
		result := make(chan error, 1)
		go func() {
			_, err := cred.Get(context.Background())
			result <- err
		}()
		eventually(t, "no fetch started", func() bool { return up.n.Load() == 1 })
		// As if the lease had expired and another instance had taken it.
		theirs := []byte(`{"owner":"another","nonce":"y"}`)
		if err := store.Put(context.Background(), leaseKey, theirs, time.Minute); err != nil {
			t.Fatal(err)
		}
		close(up.gate)
		if err := <-result; err != nil {
			t.Fatal(err)
		}
		held, err := store.Get(context.Background(), leaseKey)
		if err != nil || !bytes.Equal(held, theirs) {
			t.Fatalf("lease = %s, %v; the finished fetch released another owner's lease", held, err)
		}
	})
}

func TestClusterReplacedValueReachesCaches(t *testing.T) {
	forEachBackend(t, func(t *testing.T, join func() (kv.Store, kv.Bus)) {
		up := &fakeUpstream{}
		creds := cluster(t, join, 4, newFakeClock(), up, true, nil)
		eventually(t, "the Run loops did not warm every instance with v1", func() bool { return allPeek(creds, "v1") })
		before := make([]int, len(creds))
		for i, c := range creds {
			before[i] = c.Fetches()
		}
		if _, err := creds[0].Invalidate(context.Background(), "v1"); err != nil {
			t.Fatal(err)
		}
		// Peek does no I/O, and the periodic resync is 30s away: within 20s
		// only the notice can bring v2 into the other caches.
		eventually(t, "v2 did not reach the other instances' caches", func() bool { return allPeek(creds, "v2") })
		if n := up.n.Load(); n != 2 {
			t.Fatalf("%d fetches, want 2", n)
		}
		for i, c := range creds {
			want := before[i]
			if i == 0 {
				want++
			}
			if c.Fetches() != want {
				t.Fatalf("instance %d fetched %d times, want %d: only instance 0 replaces the value", i, c.Fetches()-before[i], want-before[i])
			}
		}
	})
}

func TestClusterProactiveRefreshOncePerLifetime(t *testing.T) {
	forEachBackend(t, func(t *testing.T, join func() (kv.Store, kv.Bus)) {
		const n = 4
		up := &fakeUpstream{}
		clock := newFakeClock()
		creds := cluster(t, join, n, clock, up, true, nil)
		want := "v1"
		for lifetimeNo := 1; lifetimeNo <= 3; lifetimeNo++ {
			// Settled: every instance holds the value and every Run loop
			// sleeps until its refresh; nothing can fetch until the clock moves.
			eventually(t, fmt.Sprintf("lifetime %d: instances did not settle on %s", lifetimeNo, want), func() bool {
				return allPeek(creds, want) && clock.Sleepers() == n
			})
			if got := up.n.Load(); got != int64(lifetimeNo) {
				t.Fatalf("lifetime %d: %d fetches by %d Run loops, want %d", lifetimeNo, got, n, lifetimeNo)
			}
			tok, _ := creds[0].Peek()
			// Past every loop's jittered wake-up, before expiry.
			clock.Set(tok.RefreshAt.Add(time.Minute))
			if !clock.Now().Before(tok.ExpiresAt) {
				t.Fatal("test moved the clock past expiry")
			}
			want = fmt.Sprintf("v%d", lifetimeNo+1)
		}
	})
}

// flakyStore fails or hangs on demand, like a networked store that is down
// or slow.
type flakyStore struct {
	kv.Store
	down    atomic.Bool
	hang    atomic.Bool
	release chan struct{}
}

var errFlaky = errors.New("flaky: connection refused")

func (s *flakyStore) check(ctx context.Context) error {
	if s.hang.Load() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.release:
			return fmt.Errorf("%w: %w", kv.ErrUnavailable, errFlaky)
		}
	}
	if s.down.Load() {
		return fmt.Errorf("%w: %w", kv.ErrUnavailable, errFlaky)
	}
	return nil
}

func (s *flakyStore) Get(ctx context.Context, key string) ([]byte, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	return s.Store.Get(ctx, key)
}

func (s *flakyStore) Put(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	return s.Store.Put(ctx, key, value, ttl)
}

func (s *flakyStore) PutIfAbsent(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	if err := s.check(ctx); err != nil {
		return false, err
	}
	return s.Store.PutIfAbsent(ctx, key, value, ttl)
}

func (s *flakyStore) CompareAndSwap(ctx context.Context, key string, old, value []byte, ttl time.Duration) (bool, error) {
	if err := s.check(ctx); err != nil {
		return false, err
	}
	return s.Store.CompareAndSwap(ctx, key, old, value, ttl)
}

func (s *flakyStore) CompareAndDelete(ctx context.Context, key string, old []byte) (bool, error) {
	if err := s.check(ctx); err != nil {
		return false, err
	}
	return s.Store.CompareAndDelete(ctx, key, old)
}

func TestClusterStoreUnavailable(t *testing.T) {
	forEachBackend(t, func(t *testing.T, join func() (kv.Store, kv.Bus)) {
		flaky := map[*oauth.Credential]*flakyStore{}
		var pending []*flakyStore
		wrap := func(s kv.Store) kv.Store {
			f := &flakyStore{Store: s, release: make(chan struct{})}
			t.Cleanup(func() { close(f.release) })
			pending = append(pending, f)
			return f
		}
		up := &fakeUpstream{}
		clock := newFakeClock()
		// Instance 0 follows notices (Run); instance 1 reads through; 2 is cold.
		creds := append(cluster(t, join, 1, clock, up, true, wrap), cluster(t, join, 2, clock, up, false, wrap)...)
		for i, c := range creds {
			flaky[c] = pending[i]
		}
		ctx := context.Background()
		assertAll(t, callAll(t, creds[:2], 1, get), "v1")
		eventually(t, "the Run loop did not warm instance 0", func() bool { return allPeek(creds[:1], "v1") })
		for _, f := range flaky {
			f.down.Store(true)
		}

		t.Run("cold instance gets the store's error", func(t *testing.T) {
			_, err := creds[2].Get(ctx)
			if !errors.Is(err, kv.ErrUnavailable) || !errors.Is(err, errFlaky) {
				t.Fatalf("err = %v, want it to wrap kv.ErrUnavailable and its cause", err)
			}
		})
		t.Run("local copy keeps serving", func(t *testing.T) {
			for i, c := range creds[:2] {
				if tok, err := c.Get(ctx); err != nil || tok.Value != "v1" {
					t.Fatalf("instance %d: %q, %v; want the cached v1", i, tok.Value, err)
				}
			}
			// Due for refresh: the lease cannot be taken, so nobody fetches,
			// and the still-valid copy is served.
			tok, _ := creds[0].Peek()
			clock.Set(tok.RefreshAt.Add(time.Second))
			for i, c := range creds[:2] {
				if tok, err := c.Get(ctx); err != nil || tok.Value != "v1" {
					t.Fatalf("instance %d when due: %q, %v; want the cached v1", i, tok.Value, err)
				}
			}
			if n := up.n.Load(); n != 1 {
				t.Fatalf("%d fetches while the store was down, want none beyond the first", n)
			}
		})
		t.Run("expired copy gives the store's error", func(t *testing.T) {
			tok, _ := creds[0].Peek()
			clock.Set(tok.ExpiresAt.Add(time.Second))
			for i, c := range creds[:2] {
				if _, err := c.Get(ctx); !errors.Is(err, kv.ErrUnavailable) {
					t.Fatalf("instance %d: err = %v, want kv.ErrUnavailable", i, err)
				}
				if _, err := c.Invalidate(ctx, "v1"); !errors.Is(err, kv.ErrUnavailable) {
					t.Fatalf("instance %d invalidate: err = %v, want kv.ErrUnavailable", i, err)
				}
			}
		})
		t.Run("recovers when the store is back", func(t *testing.T) {
			for _, f := range flaky {
				f.down.Store(false)
			}
			values := callAll(t, creds, 3, get)
			assertAll(t, values, "v2")
			if n := up.n.Load(); n != 2 {
				t.Fatalf("%d fetches, want 2", n)
			}
		})
		t.Run("hanging store: callers' deadlines hold", func(t *testing.T) {
			f := flaky[creds[2]]
			f.hang.Store(true)
			defer f.hang.Store(false)
			tok, _ := creds[2].Peek()
			clock.Set(tok.ExpiresAt.Add(time.Second))
			impatient, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
			defer cancel()
			result := make(chan error, 1)
			go func() {
				_, err := creds[2].Get(impatient)
				result <- err
			}()
			select {
			case err := <-result:
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("err = %v, want the caller's deadline", err)
				}
			case <-time.After(longWait):
				t.Fatal("Get ignored its caller's deadline while the store hung")
			}
		})
	})
}

// pausingStore stops after its first read of the credential until told to
// go on, holding an instance between reading the store and reaching for
// the lease.
type pausingStore struct {
	kv.Store
	once    sync.Once
	paused  chan struct{}
	proceed chan struct{}
}

func (s *pausingStore) Get(ctx context.Context, key string) ([]byte, error) {
	v, err := s.Store.Get(ctx, key)
	if key == credKey {
		s.once.Do(func() {
			close(s.paused)
			<-s.proceed
		})
	}
	return v, err
}

func TestClusterLeaseWinnerRereadsStore(t *testing.T) {
	forEachBackend(t, func(t *testing.T, join func() (kv.Store, kv.Bus)) {
		up := &fakeUpstream{}
		clock := newFakeClock()
		a := cluster(t, join, 1, clock, up, false, nil)[0]
		slow := &pausingStore{paused: make(chan struct{}), proceed: make(chan struct{})}
		b := cluster(t, join, 1, clock, up, false, func(s kv.Store) kv.Store { slow.Store = s; return slow })[0]

		result := make(chan oauth.Token, 1)
		go func() {
			tok, err := b.Get(context.Background())
			if err != nil {
				t.Error(err)
			}
			result <- tok
		}()
		<-slow.paused // b has seen an empty store
		if tok, err := a.Get(context.Background()); err != nil || tok.Value != "v1" {
			t.Fatalf("a: %q, %v", tok.Value, err)
		}
		// a's lease is released: b takes the next one, and must find v1
		// in the store before fetching.
		close(slow.proceed)
		if tok := <-result; tok.Value != "v1" {
			t.Fatalf("b got %q, want v1", tok.Value)
		}
		if n := up.n.Load(); n != 1 {
			t.Fatalf("%d fetches, want 1: the lease winner fetched without rereading the store", n)
		}
	})
}

// fullStore refuses writes as a store on a full disk does.
type fullStore struct{ kv.Store }

func (fullStore) Put(context.Context, string, []byte, time.Duration) error { return kv.ErrNoSpace }
func (fullStore) PutIfAbsent(context.Context, string, []byte, time.Duration) (bool, error) {
	return false, kv.ErrNoSpace
}
func (fullStore) CompareAndSwap(context.Context, string, []byte, []byte, time.Duration) (bool, error) {
	return false, kv.ErrNoSpace
}

func TestFullStoreStillServes(t *testing.T) {
	// A full disk is a local store with one process: the credential is
	// fetched without a lease and served from memory, once.
	up := &fakeUpstream{}
	cred := oauth.NewCredential(oauth.CredentialConfig{
		Name: "t", Key: credKey, Store: fullStore{openStore(t, t.TempDir())}, Fetch: up.fetch,
	})
	for range 3 {
		if tok, err := cred.Get(context.Background()); err != nil || tok.Value != "v1" {
			t.Fatalf("Get = %q, %v; want v1 served from memory", tok.Value, err)
		}
	}
	if n := up.n.Load(); n != 1 {
		t.Fatalf("%d fetches, want 1", n)
	}
}
