package oauth

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/100steps/wxappliance/appliance/poll"
	"github.com/100steps/wxappliance/kv"
	"github.com/100steps/wxappliance/kv/kvtest"
)

// readCounter counts the store's Gets and, when hold is set, stops each Get
// after it has read until hold is closed, telling read.
type readCounter struct {
	kv.Store
	gets atomic.Int32
	hold chan struct{}
	read chan struct{}
}

func (c *readCounter) Get(ctx context.Context, key string) ([]byte, error) {
	c.gets.Add(1)
	v, err := c.Store.Get(ctx, key)
	if c.hold != nil {
		c.read <- struct{}{}
		<-c.hold
	}
	return v, err
}

type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func newCacheSessions(store kv.Store, bus kv.Bus, now func() time.Time) *Sessions {
	return NewSessions(store, nil, SessionConfig{TTL: time.Hour, Bus: bus, Now: now})
}

func mustCreate(t *testing.T, s *Sessions, openid string) string {
	t.Helper()
	id, err := s.Create(t.Context(), UserToken{OpenID: openid, Scope: ScopeBase, AccessToken: "at", RefreshToken: "rt", ExpiresAt: s.now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func lookupOpenID(t *testing.T, s *Sessions, id string) string {
	t.Helper()
	sess, err := s.Lookup(t.Context(), id)
	if errors.Is(err, ErrNoSession) {
		return "<none>"
	}
	if err != nil {
		t.Fatal(err)
	}
	return sess.OpenID
}

// On a store nobody else writes, a session read once is kept: later
// lookups do not read the store, until Sessions changes it (logout, a
// refreshed token) or it expires.
func TestSessionCacheOnPrivateStore(t *testing.T) {
	clock := &testClock{now: time.Unix(1_700_000_000, 0)}
	store := &readCounter{Store: kvtest.Badger(t)}
	s := newCacheSessions(store, nil, clock.Now)
	id := mustCreate(t, s, "o1")
	for range 3 {
		if got := lookupOpenID(t, s, id); got != "o1" {
			t.Fatalf("lookup = %q", got)
		}
	}
	if n := store.gets.Load(); n != 1 {
		t.Fatalf("%d store reads for three lookups, want 1", n)
	}

	t.Run("a refreshed token replaces the copy", func(t *testing.T) {
		sess, _ := s.Lookup(t.Context(), id)
		sess.AccessToken = "at2"
		if err := s.put(t.Context(), id, sess); err != nil {
			t.Fatal(err)
		}
		s.changed(t.Context(), sessionHash(id))
		if got, _ := s.Lookup(t.Context(), id); got.AccessToken != "at2" {
			t.Fatalf("access token after the refresh = %q", got.AccessToken)
		}
	})

	t.Run("expiry", func(t *testing.T) {
		before := store.gets.Load()
		lookupOpenID(t, s, id)
		if store.gets.Load() != before {
			t.Fatal("a kept session was read again")
		}
		clock.Advance(time.Hour - expiryMargin)
		lookupOpenID(t, s, id) // the store still has it: its clock is real
		if store.gets.Load() != before+1 {
			t.Fatal("a copy was used at its session's expiry")
		}
		lookupOpenID(t, s, id)
		if store.gets.Load() != before+2 {
			t.Fatal("a session read after its expiry was kept")
		}
	})

	t.Run("logout", func(t *testing.T) {
		other := mustCreate(t, s, "o2")
		lookupOpenID(t, s, other)
		if ok, err := s.Revoke(t.Context(), other); !ok || err != nil {
			t.Fatal(ok, err)
		}
		if got := lookupOpenID(t, s, other); got != "<none>" {
			t.Fatalf("after logout: %q", got)
		}
	})
}

// A record of an earlier version carries no expiry: it is read from the
// store every time rather than kept past a TTL nobody knows.
func TestSessionCacheSkipsRecordsWithoutExpiry(t *testing.T) {
	store := &readCounter{Store: kvtest.Badger(t)}
	s := newCacheSessions(store, nil, nil)
	id := NewSecret()
	old := `{"openid":"o1","scope":"snsapi_base","access_token":"a","access_expires_at":"2030-01-01T00:00:00Z","refresh_token":"r","created_at":"2026-01-01T00:00:00Z"}`
	if err := store.Put(t.Context(), sessionPrefix+sessionHash(id), []byte(old), time.Hour); err != nil {
		t.Fatal(err)
	}
	lookupOpenID(t, s, id)
	if got := lookupOpenID(t, s, id); got != "o1" || store.gets.Load() != 2 {
		t.Fatalf("lookup %q, %d store reads; want o1 and 2", got, store.gets.Load())
	}
}

// A lookup that read the session before a logout wrote the store may
// answer with it (it was current when read), but must not keep it.
func TestSessionCacheLogoutDuringRead(t *testing.T) {
	store := &readCounter{Store: kvtest.Badger(t)}
	s := newCacheSessions(store, nil, nil)
	id := mustCreate(t, s, "o1")
	store.hold, store.read = make(chan struct{}), make(chan struct{}, 8)
	done := make(chan string)
	go func() {
		sess, _ := s.Lookup(context.Background(), id)
		done <- sess.OpenID
	}()
	<-store.read // the lookup has the session in hand
	if err := s.Delete(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	close(store.hold)
	if got := <-done; got != "o1" {
		t.Fatalf("the racing lookup answered %q", got)
	}
	if got := lookupOpenID(t, s, id); got != "<none>" {
		t.Fatalf("after logout: %q, the racing read was kept", got)
	}
}

func TestSessionCacheBounded(t *testing.T) {
	var c sessionCache
	c.keep = true
	now := time.Now()
	sess := Session{OpenID: "o", ExpiresAt: now.Add(time.Hour)}
	for i := range sessionCacheSize + 100 {
		c.put(fmt.Sprint(i), sess, c.begin(), now)
	}
	if n := len(c.entries); n != sessionCacheSize {
		t.Fatalf("%d copies, want at most %d", n, sessionCacheSize)
	}
}

// Instances on one Redis: each keeps copies only while it follows the
// others' notices, and a logout or a refreshed token on one drops the
// copies of every other at once, not just after sharedMaxAge.
func TestSessionCacheAcrossInstances(t *testing.T) {
	srv := kvtest.StartRedisServer(t, kvtest.RedisServerOptions{})
	ctx, stop := context.WithCancel(t.Context())
	defer stop()
	instance := func() (*Sessions, *readCounter, func()) {
		r := srv.Open(t, kv.RedisOptions{})
		store := &readCounter{Store: r}
		s := newCacheSessions(store, r, nil)
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); s.Run(runCtx) }()
		return s, store, func() { cancel(); <-done }
	}
	a, _, _ := instance()
	b, bStore, stopB := instance()
	waitKeeping(t, a)
	waitKeeping(t, b)

	id := mustCreate(t, a, "o1")
	h := sessionHash(id)
	lookupOpenID(t, b, id)
	lookupOpenID(t, b, id)
	if n := bStore.gets.Load(); n != 1 {
		t.Fatalf("B read the store %d times for two lookups, want 1", n)
	}
	if ok, err := a.Revoke(t.Context(), id); !ok || err != nil {
		t.Fatal(ok, err)
	}
	poll.Until(t, "B drops its copy on A's notice", func() bool { return !b.cache.has(h) })
	if got := lookupOpenID(t, b, id); got != "<none>" {
		t.Fatalf("B after logout on A: %q", got)
	}

	// An instance that does not follow the notices keeps nothing.
	c := newCacheSessions(&readCounter{Store: srv.Open(t, kv.RedisOptions{})}, srv.Open(t, kv.RedisOptions{}), nil)
	other := mustCreate(t, a, "o2")
	lookupOpenID(t, c, other)
	if c.cache.has(sessionHash(other)) {
		t.Fatal("an instance not subscribed kept a copy")
	}

	// One that stops following forgets what it kept.
	lookupOpenID(t, b, other)
	if !b.cache.has(sessionHash(other)) {
		t.Fatal("B kept nothing while subscribed")
	}
	stopB()
	if b.cache.has(sessionHash(other)) {
		t.Fatal("B kept a copy after its subscription ended")
	}
}

func (c *sessionCache) has(h string) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	_, ok := c.entries[h]
	return ok
}

func waitKeeping(t *testing.T, s *Sessions) {
	t.Helper()
	poll.Until(t, "subscribed to session notices", func() bool {
		s.cache.mu.RLock()
		defer s.cache.mu.RUnlock()
		return s.cache.keep
	})
}
