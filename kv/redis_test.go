package kv_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/100steps/wxappliance/appliance/poll"
	"github.com/100steps/wxappliance/kv"
	"github.com/100steps/wxappliance/kv/kvtest"
)

// opLimit is how long any operation may take while Redis is in trouble
// before the test calls it a hang. The configured timeouts make it about a
// second; the margin is for a busy machine.
const opLimit = 10 * time.Second

// recoverDeadline bounds the wait for the store to work again once Redis
// is back.
const recoverDeadline = 30 * time.Second

// production are the store's default timeouts, which RedisServer.Open
// would lengthen: the trouble tests check what users get.
var production = kv.RedisOptions{
	DialTimeout:  time.Second,
	ReadTimeout:  time.Second,
	WriteTimeout: time.Second,
	PoolTimeout:  2 * time.Second,
}

type op struct {
	name string
	do   func(ctx context.Context) error
}

// ops is every operation of r, each writing or reading its own key.
func ops(r *kv.Redis) []op {
	v := []byte("v")
	return []op{
		{"Get", func(ctx context.Context) error {
			_, err := r.Get(ctx, "k")
			if errors.Is(err, kv.ErrNotFound) {
				return nil
			}
			return err
		}},
		{"Put", func(ctx context.Context) error { return r.Put(ctx, "k", v, time.Minute) }},
		{"Delete", func(ctx context.Context) error { return r.Delete(ctx, "d") }},
		{"Take", func(ctx context.Context) error {
			_, err := r.Take(ctx, "t")
			if errors.Is(err, kv.ErrNotFound) {
				return nil
			}
			return err
		}},
		{"PutIfAbsent", func(ctx context.Context) error {
			_, err := r.PutIfAbsent(ctx, "p", v, time.Minute)
			return err
		}},
		{"CompareAndSwap", func(ctx context.Context) error {
			_, err := r.CompareAndSwap(ctx, "k", v, v, time.Minute)
			return err
		}},
		{"CompareAndDelete", func(ctx context.Context) error {
			_, err := r.CompareAndDelete(ctx, "c", v)
			return err
		}},
		{"Publish", func(ctx context.Context) error { return r.Publish(ctx, "chan", v) }},
		{"Subscribe", func(ctx context.Context) error {
			ctx, cancel := context.WithCancel(ctx)
			defer cancel()
			_, err := r.Subscribe(ctx, "chan")
			return err
		}},
		{"Ping", func(ctx context.Context) error { return r.Ping(ctx) }},
		{"Ready", func(context.Context) error { return r.Ready() }},
	}
}

// within runs fn and fails t if it has not returned after limit.
func within(t *testing.T, limit time.Duration, name string, fn func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- fn() }()
	select {
	case err := <-done:
		return err
	case <-time.After(limit):
		t.Fatalf("%s still running after %v: it hangs", name, limit)
		return nil
	}
}

// waitWorking polls every operation until it succeeds.
func waitWorking(t *testing.T, r *kv.Redis) {
	t.Helper()
	for _, o := range ops(r) {
		poll.Until(t, o.name+" to work again after Redis came back", func() bool {
			return within(t, opLimit, o.name, func() error { return o.do(t.Context()) }) == nil
		})
	}
}

func TestRedisDownAndBack(t *testing.T) {
	for _, c := range []struct {
		name string
		down func(*kvtest.RedisServer)
	}{
		{"stopped", (*kvtest.RedisServer).Stop},
		{"killed", (*kvtest.RedisServer).Kill},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := kvtest.StartRedisServer(t, kvtest.RedisServerOptions{})
			r := srv.Open(t, production)
			// Fill the pool with connections that Redis going away breaks.
			waitWorking(t, r)

			c.down(srv)
			start := time.Now()
			for name, err := range concurrently(t, ops(r), func() (context.Context, func()) { return t.Context(), func() {} }) {
				if !errors.Is(err, kv.ErrUnavailable) {
					t.Errorf("%s with Redis %s = %v, want ErrUnavailable", name, c.name, err)
				}
			}
			t.Logf("every operation failed within %v of Redis going down", time.Since(start))

			srv.Start()
			// The same store recovers without being told.
			waitWorking(t, r)
		})
	}
}

func TestRedisStalled(t *testing.T) {
	srv := kvtest.StartRedisServer(t, kvtest.RedisServerOptions{})
	r := srv.Open(t, production)
	waitWorking(t, r)

	srv.Pause()
	// All at once: a stalled Redis must not make callers queue behind
	// each other either.
	start := time.Now()
	for name, err := range concurrently(t, ops(r), func() (context.Context, func()) { return t.Context(), func() {} }) {
		if !errors.Is(err, kv.ErrUnavailable) {
			t.Errorf("%s with Redis stalled = %v, want ErrUnavailable", name, err)
		}
	}
	t.Logf("every operation failed within %v of Redis stalling", time.Since(start))

	// A request deadline shorter than the read timeout ends the wait, and
	// the caller learns that its own deadline passed.
	var withCtx []op
	for _, o := range ops(r) {
		if o.name != "Ready" { // Ready has no context
			withCtx = append(withCtx, o)
		}
	}
	short := func() (context.Context, func()) { return context.WithTimeout(t.Context(), 200*time.Millisecond) }
	for name, err := range concurrently(t, withCtx, short) {
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s with Redis stalled and a short deadline = %v, want context.DeadlineExceeded", name, err)
		}
	}

	srv.Resume()
	waitWorking(t, r)
}

// concurrently runs every op at once, each with a context from newCtx,
// and returns their errors by name; it fails t if one hangs.
func concurrently(t *testing.T, ops []op, newCtx func() (context.Context, func())) map[string]error {
	t.Helper()
	var mu sync.Mutex
	errs := map[string]error{}
	var wg sync.WaitGroup
	for _, o := range ops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := newCtx()
			defer cancel()
			err := o.do(ctx)
			mu.Lock()
			errs[o.name] = err
			mu.Unlock()
		}()
	}
	within(t, opLimit, "the operations", func() error { wg.Wait(); return nil })
	return errs
}

// recorder is a slog.Handler that keeps every line it is given.
type recorder struct {
	mu    sync.Mutex
	lines []string
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *recorder) WithGroup(string) slog.Handler            { return r }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	line := rec.Message
	rec.Attrs(func(a slog.Attr) bool {
		line += " " + a.String()
		return true
	})
	r.mu.Lock()
	r.lines = append(r.lines, line)
	r.mu.Unlock()
	return nil
}

func (r *recorder) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.lines...)
}

func TestRedisPasswordNeverShown(t *testing.T) {
	const password = "pw-Secr3t-9f2c"
	const wrong = "wrong-Pw-7d1e"
	srv := kvtest.StartRedisServer(t, kvtest.RedisServerOptions{Password: password})
	if !strings.Contains(srv.URL(), password) {
		t.Fatalf("URL %q does not carry the password: the test would prove nothing", srv.URL())
	}

	logs := &recorder{}
	logger := slog.New(logs)
	// go-redis logs through one process-wide logger: capture it too.
	kv.LogRedisTo(logger)
	t.Cleanup(func() { kv.LogRedisTo(slog.Default()) })

	r := srv.Open(t, kv.RedisOptions{Logger: logger})
	waitWorking(t, r)
	if strings.Contains(r.String(), password) {
		t.Errorf("String() = %q shows the password", r.String())
	}

	var errs []error
	srv.Stop()
	for _, o := range ops(r) {
		err := within(t, opLimit, o.name, func() error { return o.do(t.Context()) })
		if err == nil {
			t.Fatalf("%s succeeded with Redis stopped", o.name)
		}
		errs = append(errs, err)
	}

	srv.Start()
	bad := srv.Open(t, kv.RedisOptions{URL: strings.Replace(srv.URL(), password, wrong, 1), Logger: logger})
	for _, o := range ops(bad) {
		err := within(t, opLimit, o.name, func() error { return o.do(t.Context()) })
		if !errors.Is(err, kv.ErrUnavailable) {
			t.Errorf("%s with a wrong password = %v, want ErrUnavailable", o.name, err)
		}
		errs = append(errs, err)
	}
	if !strings.Contains(errs[len(errs)-1].Error(), "WRONGPASS") {
		t.Errorf("error for a wrong password does not say so: %v", errs[len(errs)-1])
	}

	for _, err := range errs {
		for _, secret := range []string{password, wrong} {
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error shows a password: %v", err)
			}
		}
	}
	lines := logs.all()
	if len(lines) == 0 {
		t.Log("no log lines were written; only errors were checked")
	}
	for _, line := range lines {
		for _, secret := range []string{password, wrong} {
			if strings.Contains(line, secret) {
				t.Errorf("log line shows a password: %s", line)
			}
		}
	}
}

// awaitNotice publishes msg until ch yields it: notices published while a
// subscription reconnects are lost, as a Bus allows.
func awaitNotice(t *testing.T, pub kv.Bus, ch <-chan []byte, channel, msg string) {
	t.Helper()
	stop := time.After(recoverDeadline)
	for {
		err := pub.Publish(t.Context(), channel, []byte(msg))
		select {
		case got, ok := <-ch:
			if !ok {
				t.Fatalf("subscription closed while waiting for %q", msg)
			}
			if string(got) == msg {
				return
			}
		case <-time.After(100 * time.Millisecond):
		case <-stop:
			t.Fatalf("%q not received within %v (last Publish: %v)", msg, recoverDeadline, err)
		}
	}
}

func TestRedisSubscriptionSurvivesRestart(t *testing.T) {
	for _, c := range []struct {
		name string
		down func(*kvtest.RedisServer)
	}{
		{"stopped", (*kvtest.RedisServer).Stop},
		{"killed", (*kvtest.RedisServer).Kill},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := kvtest.StartRedisServer(t, kvtest.RedisServerOptions{})
			sub := srv.Open(t, kv.RedisOptions{})
			pub := srv.Open(t, kv.RedisOptions{})
			ch, err := sub.Subscribe(t.Context(), "token-changed")
			if err != nil {
				t.Fatalf("Subscribe: %v", err)
			}
			awaitNotice(t, pub, ch, "token-changed", "before")

			c.down(srv)
			srv.Start()
			awaitNotice(t, pub, ch, "token-changed", "after")
		})
	}
}

// Two stores on one Redis are two instances of the appliance: same prefix,
// same data and notices; another prefix, nothing in common.
func TestRedisPrefixes(t *testing.T) {
	srv := kvtest.StartRedisServer(t, kvtest.RedisServerOptions{})
	a := srv.Open(t, kv.RedisOptions{})
	b := srv.Open(t, kv.RedisOptions{})
	other := srv.Open(t, kv.RedisOptions{Prefix: "staging:"})
	raw := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { raw.Close() })
	ctx := t.Context()

	if err := a.Put(ctx, "session", []byte("alice"), 0); err != nil {
		t.Fatal(err)
	}
	if got, err := b.Get(ctx, "session"); err != nil || string(got) != "alice" {
		t.Errorf("second instance: Get = %q, %v; want alice", got, err)
	}
	if _, err := other.Get(ctx, "session"); !errors.Is(err, kv.ErrNotFound) {
		t.Errorf("other prefix: Get = %v, want ErrNotFound", err)
	}
	if got, err := raw.Get(ctx, kv.DefaultRedisPrefix+"session").Result(); err != nil || got != "alice" {
		t.Errorf("key in Redis: GET %ssession = %q, %v", kv.DefaultRedisPrefix, got, err)
	}
	if n, err := raw.Exists(ctx, "session").Result(); err != nil || n != 0 {
		t.Errorf("unprefixed key exists: %d, %v", n, err)
	}

	chB, err := b.Subscribe(ctx, "notice")
	if err != nil {
		t.Fatal(err)
	}
	chOther, err := other.Subscribe(ctx, "notice")
	if err != nil {
		t.Fatal(err)
	}
	rawSub := raw.Subscribe(ctx, kv.DefaultRedisPrefix+"notice")
	t.Cleanup(func() { rawSub.Close() })
	if _, err := rawSub.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Publish(ctx, "notice", []byte("from a")); err != nil {
		t.Fatal(err)
	}
	if err := other.Publish(ctx, "notice", []byte("from staging")); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		ch   <-chan []byte
		want string
	}{{"same prefix", chB, "from a"}, {"other prefix", chOther, "from staging"}} {
		select {
		case got := <-c.ch:
			if string(got) != c.want {
				t.Errorf("%s: received %q first, want %q", c.name, got, c.want)
			}
		case <-time.After(recoverDeadline):
			t.Fatalf("%s: nothing received", c.name)
		}
	}
	msg, err := rawSub.ReceiveMessage(ctx)
	if err != nil || msg.Payload != "from a" {
		t.Errorf("channel in Redis %s: received %v, %v", kv.DefaultRedisPrefix+"notice", msg, err)
	}
}

func TestRedisClosed(t *testing.T) {
	srv := kvtest.StartRedisServer(t, kvtest.RedisServerOptions{})
	r, err := kv.NewRedis(kv.RedisOptions{URL: srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	ch, err := r.Subscribe(t.Context(), "c")
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	for _, o := range ops(r) {
		if err := o.do(t.Context()); !errors.Is(err, kv.ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", o.name, err)
		}
	}
	select {
	case _, ok := <-ch:
		if ok {
			t.Fatal("received a notice after Close")
		}
	case <-time.After(recoverDeadline):
		t.Fatal("subscription still open after Close")
	}
}

// Keys are stored with PX, rounded up to the millisecond: never a shorter
// life than asked, and no rounding to seconds.
func TestRedisExpiryPrecision(t *testing.T) {
	srv := kvtest.StartRedisServer(t, kvtest.RedisServerOptions{})
	r := srv.Open(t, kv.RedisOptions{})
	raw := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { raw.Close() })
	ctx := t.Context()

	const ttl = time.Hour + 1500*time.Microsecond // 3600001.5 ms
	const wantMs = 3600002
	for _, c := range []struct {
		name, key string
		write     func() error
	}{
		{"Put", "put", func() error { return r.Put(ctx, "put", []byte("v"), ttl) }},
		{"PutIfAbsent", "pia", func() error { _, err := r.PutIfAbsent(ctx, "pia", []byte("v"), ttl); return err }},
		{"CompareAndSwap", "cas", func() error {
			if err := r.Put(ctx, "cas", []byte("v"), 0); err != nil {
				return err
			}
			_, err := r.CompareAndSwap(ctx, "cas", []byte("v"), []byte("w"), ttl)
			return err
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := time.Now().UnixMilli()
			if err := c.write(); err != nil {
				t.Fatal(err)
			}
			after := time.Now().UnixMilli()
			at, err := raw.Do(ctx, "PEXPIRETIME", kv.DefaultRedisPrefix+c.key).Int64()
			if err != nil {
				t.Fatal(err)
			}
			if at < before+wantMs || at > after+wantMs {
				t.Fatalf("expires at %d, want %d ms after the write (in [%d, %d])", at, wantMs, before+wantMs, after+wantMs)
			}
		})
	}
}

// A Redis at maxmemory with noeviction refuses writes and still serves
// reads: what kv.ErrNoSpace stands for.
func TestRedisOutOfMemory(t *testing.T) {
	srv := kvtest.StartRedisServer(t, kvtest.RedisServerOptions{})
	r := srv.Open(t, kv.RedisOptions{})
	raw := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { raw.Close() })
	ctx := t.Context()
	if err := r.Put(ctx, "k", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	for _, kv := range [][2]string{{"maxmemory-policy", "noeviction"}, {"maxmemory", "1"}} {
		if err := raw.ConfigSet(ctx, kv[0], kv[1]).Err(); err != nil {
			t.Fatalf("CONFIG SET %s: %v", kv[0], err)
		}
	}
	writes := []op{
		{"Put", func(ctx context.Context) error { return r.Put(ctx, "new", []byte("v"), 0) }},
		{"PutIfAbsent", func(ctx context.Context) error { _, err := r.PutIfAbsent(ctx, "new", []byte("v"), 0); return err }},
		{"CompareAndSwap", func(ctx context.Context) error {
			_, err := r.CompareAndSwap(ctx, "k", []byte("v"), []byte("w"), 0)
			return err
		}},
	}
	for _, w := range writes {
		if err := w.do(ctx); !errors.Is(err, kv.ErrNoSpace) {
			t.Errorf("%s at maxmemory = %v, want ErrNoSpace", w.name, err)
		}
	}
	if got, err := r.Get(ctx, "k"); err != nil || string(got) != "v" {
		t.Errorf("Get at maxmemory = %q, %v; want v", got, err)
	}
	// Freeing space works: deletes are not refused.
	if ok, err := r.CompareAndDelete(ctx, "k", []byte("v")); err != nil || !ok {
		t.Errorf("CompareAndDelete at maxmemory = %v, %v; want true", ok, err)
	}
	if err := raw.ConfigSet(ctx, "maxmemory", "0").Err(); err != nil {
		t.Fatal(err)
	}
	if err := r.Put(ctx, "new", []byte("v"), 0); err != nil {
		t.Errorf("Put once memory is back: %v", err)
	}
}

func ExampleNewRedis() {
	r, err := kv.NewRedis(kv.RedisOptions{
		URL:    "redis://:password@127.0.0.1:6379/0",
		Prefix: "wxappliance:",
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer r.Close()
	fmt.Println(r)
	// Output: redis 127.0.0.1:6379
}

// Without persistence a Redis restart loses every key (everybody is logged
// out); with AOF the keys come back. The README's advice rests on this.
func TestRedisRestartPersistence(t *testing.T) {
	for _, c := range []struct {
		name     string
		aof      bool
		wantKept bool
	}{
		{"no persistence", false, false},
		{"AOF", true, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := kvtest.StartRedisServer(t, kvtest.RedisServerOptions{AOF: c.aof})
			r := srv.Open(t, kv.RedisOptions{})
			if err := r.Put(t.Context(), "session", []byte("alice"), time.Hour); err != nil {
				t.Fatal(err)
			}
			srv.Stop()
			srv.Start()
			var got []byte
			var err error
			poll.Until(t, "Redis to be reachable again", func() bool {
				got, err = r.Get(t.Context(), "session")
				return !errors.Is(err, kv.ErrUnavailable)
			})
			switch {
			case c.wantKept && (err != nil || string(got) != "alice"):
				t.Errorf("after restart: Get = %q, %v; want alice", got, err)
			case !c.wantKept && !errors.Is(err, kv.ErrNotFound):
				t.Errorf("after restart: Get = %q, %v; want ErrNotFound", got, err)
			}
		})
	}
}
