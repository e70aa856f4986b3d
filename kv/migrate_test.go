package kv_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/100steps/wxappliance/appliance/poll"
	"github.com/100steps/wxappliance/kv"
	"github.com/100steps/wxappliance/kv/kvtest"
)

type record struct {
	value     string
	expiresAt time.Time
}

// contents reads a Badger store through Each.
func contents(t *testing.T, b *kv.Badger) map[string]record {
	t.Helper()
	got := map[string]record{}
	err := b.Each(t.Context(), func(key string, value []byte, at time.Time) error {
		got[key] = record{string(value), at}
		return nil
	})
	if err != nil {
		t.Fatalf("Each: %v", err)
	}
	return got
}

// source builds a Badger store holding live keys with and without expiry,
// one expired and one deleted key.
func source(t *testing.T) *kv.Badger {
	t.Helper()
	ctx := t.Context()
	src := kvtest.Badger(t)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(src.Put(ctx, "expired", []byte("x"), time.Second))
	poll.Until(t, "the key with ttl 1s to expire", func() bool {
		_, err := src.Get(ctx, "expired")
		return errors.Is(err, kv.ErrNotFound)
	})
	must(src.Put(ctx, "deleted", []byte("x"), 0))
	must(src.Delete(ctx, "deleted"))
	must(src.Put(ctx, "forever", []byte("login state"), 0))
	must(src.Put(ctx, "hour", []byte("session"), time.Hour))
	must(src.Put(ctx, "day", []byte{0, 1, 2, 255}, 24*time.Hour))
	return src
}

func TestEach(t *testing.T) {
	src := source(t)
	got := contents(t, src)
	if len(got) != 3 {
		t.Fatalf("Each saw %d keys %v, want forever, hour and day", len(got), got)
	}
	if r := got["forever"]; r.value != "login state" || !r.expiresAt.IsZero() {
		t.Errorf("forever = %+v, want no expiry", r)
	}
	now := time.Now()
	if at := got["hour"].expiresAt; at.Before(now.Add(59*time.Minute)) || at.After(now.Add(time.Hour+2*time.Second)) {
		t.Errorf("hour expires at %v, %v from now", at, at.Sub(now))
	}

	var keys []string
	stop := errors.New("stop")
	err := src.Each(t.Context(), func(key string, _ []byte, _ time.Time) error {
		keys = append(keys, key)
		return stop
	})
	if !errors.Is(err, stop) || len(keys) != 1 || keys[0] != "day" {
		t.Errorf("Each with fn failing at once = %v after %v, want stop after [day]", err, keys)
	}

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := src.Each(ctx, func(string, []byte, time.Time) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Errorf("Each with a canceled context = %v", err)
	}
	closed := kvtest.Badger(t)
	closed.Close()
	if err := closed.Each(t.Context(), func(string, []byte, time.Time) error { return nil }); !errors.Is(err, kv.ErrClosed) {
		t.Errorf("Each after Close = %v, want ErrClosed", err)
	}
}

func TestMigrateToBadger(t *testing.T) {
	src := source(t)
	dst := kvtest.Badger(t)
	copied, err := kv.Migrate(t.Context(), src, dst)
	if err != nil || copied != 3 {
		t.Fatalf("Migrate = %d, %v; want 3 copied", copied, err)
	}
	want, got := contents(t, src), contents(t, dst)
	if len(got) != len(want) {
		t.Fatalf("destination holds %v, want %v", got, want)
	}
	for k, w := range want {
		g := got[k]
		if g.value != w.value {
			t.Errorf("%s = %q, want %q", k, g.value, w.value)
		}
		// Never earlier than in the source; later by Badger's rounding to
		// whole seconds and the time the copy took.
		if w.expiresAt.IsZero() != g.expiresAt.IsZero() ||
			g.expiresAt.Before(w.expiresAt) || g.expiresAt.After(w.expiresAt.Add(5*time.Second)) {
			t.Errorf("%s expires at %v, source at %v", k, g.expiresAt, w.expiresAt)
		}
	}
}

func TestMigrateToRedis(t *testing.T) {
	srv := kvtest.StartRedisServer(t, kvtest.RedisServerOptions{})
	src := source(t)
	dst := srv.Open(t, kv.RedisOptions{})
	raw := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { raw.Close() })
	ctx := t.Context()

	// An instance already running on Redis has a newer session.
	if err := dst.Put(ctx, "hour", []byte("newer session"), 0); err != nil {
		t.Fatal(err)
	}
	copied, err := kv.Migrate(ctx, src, dst)
	if err != nil || copied != 2 {
		t.Fatalf("Migrate = %d, %v; want 2 copied", copied, err)
	}
	if v, _ := dst.Get(ctx, "hour"); string(v) != "newer session" {
		t.Errorf("hour = %q: Migrate replaced a key the destination had", v)
	}
	want := contents(t, src)
	for _, k := range []string{"forever", "day"} {
		v, err := dst.Get(ctx, k)
		if err != nil || string(v) != want[k].value {
			t.Errorf("%s = %q, %v; want %q", k, v, err, want[k].value)
		}
		at, err := raw.Do(ctx, "PEXPIRETIME", kv.DefaultRedisPrefix+k).Int64()
		if err != nil {
			t.Fatal(err)
		}
		switch w := want[k].expiresAt; {
		case w.IsZero() && at != -1:
			t.Errorf("%s: PEXPIRETIME %d, want -1 (no expiry)", k, at)
		case !w.IsZero() && (at < w.UnixMilli() || at > w.UnixMilli()+5000):
			t.Errorf("%s expires at %d ms, source at %d ms", k, at, w.UnixMilli())
		}
	}
	for _, k := range []string{"expired", "deleted"} {
		if _, err := dst.Get(ctx, k); !errors.Is(err, kv.ErrNotFound) {
			t.Errorf("%s copied: Get = %v", k, err)
		}
	}

	if copied, err := kv.Migrate(ctx, src, dst); err != nil || copied != 0 {
		t.Errorf("second Migrate = %d, %v; want 0 copied", copied, err)
	}

	srv.Stop()
	copied, err = kv.Migrate(ctx, src, dst)
	if !errors.Is(err, kv.ErrUnavailable) || copied != 0 {
		t.Errorf("Migrate to a stopped Redis = %d, %v; want ErrUnavailable", copied, err)
	}
}
