package kvtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/100steps/wxappliance/appliance/poll"
	"github.com/100steps/wxappliance/kv"
)

// RunStoreTests checks that the stores open returns behave as kv.Store
// promises. open is called once per subtest and must return an empty store
// that is not shared with other subtests (a fresh directory, or a fresh
// prefix on a shared Redis); it should close the store with t.Cleanup.
func RunStoreTests(t *testing.T, open func(t *testing.T) kv.Store) {
	t.Run("GetPutDelete", func(t *testing.T) { testGetPutDelete(t, open(t)) })
	t.Run("Values", func(t *testing.T) { testValues(t, open(t)) })
	t.Run("ValuesAreCopies", func(t *testing.T) { testCopies(t, open(t)) })
	t.Run("InvalidArguments", func(t *testing.T) { testInvalid(t, open(t)) })
	t.Run("CanceledContext", func(t *testing.T) { testCanceled(t, open(t)) })
	t.Run("Take", func(t *testing.T) { testTake(t, open(t)) })
	t.Run("PutIfAbsent", func(t *testing.T) { testPutIfAbsent(t, open(t)) })
	t.Run("CompareAndSwap", func(t *testing.T) { testCompareAndSwap(t, open(t)) })
	t.Run("CompareAndDelete", func(t *testing.T) { testCompareAndDelete(t, open(t)) })
	t.Run("TTL", func(t *testing.T) { testTTL(t, open) })
	t.Run("Concurrent", func(t *testing.T) { testConcurrent(t, open(t)) })
}

func testGetPutDelete(t *testing.T, s kv.Store) {
	ctx := t.Context()
	if v, err := s.Get(ctx, "k"); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("Get(missing) = %q, %v; want ErrNotFound", v, err)
	}
	if err := s.Delete(ctx, "k"); err != nil {
		t.Fatalf("Delete(missing) = %v, want nil", err)
	}
	mustPut(t, s, "k", "v1", 0)
	wantValue(t, s, "k", "v1")
	mustPut(t, s, "k", "v2", time.Hour)
	wantValue(t, s, "k", "v2")
	mustPut(t, s, "other", "o", 0)
	if err := s.Delete(ctx, "k"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	wantMissing(t, s, "k")
	wantValue(t, s, "other", "o")
}

// testValues stores values and keys that a careless encoding would mangle.
func testValues(t *testing.T, s kv.Store) {
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	cases := []struct {
		name, key string
		value     []byte
	}{
		{"empty value", "empty", []byte{}},
		{"every byte", "bytes", all},
		{"1 MiB", "big", big},
		{"unicode key", "会话:用户🙂", []byte("值")},
		{"key with spaces and newline", "a b\nc\x00d", []byte("v")},
		{"long key", strings.Repeat("k", 1000), []byte("v")},
		{"key like a prefix", "wxappliance:x", []byte("v")},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := s.Put(t.Context(), c.key, c.value, 0); err != nil {
				t.Fatalf("Put: %v", err)
			}
			got, err := s.Get(t.Context(), c.key)
			if err != nil {
				t.Fatalf("Get: %v", err)
			}
			if !bytes.Equal(got, c.value) {
				t.Fatalf("Get returned %d bytes, want the %d stored", len(got), len(c.value))
			}
		})
	}
}

// testCopies checks that a store keeps no reference to a caller's slice
// and hands out slices the caller may change.
func testCopies(t *testing.T, s kv.Store) {
	ctx := t.Context()
	writes := []struct {
		name  string
		write func(v []byte) error
	}{
		{"Put", func(v []byte) error { return s.Put(ctx, "Put", v, 0) }},
		{"PutIfAbsent", func(v []byte) error {
			ok, err := s.PutIfAbsent(ctx, "PutIfAbsent", v, 0)
			if err == nil && !ok {
				err = errors.New("PutIfAbsent on a missing key reported false")
			}
			return err
		}},
		{"CompareAndSwap", func(v []byte) error {
			mustPut(t, s, "CompareAndSwap", "old", 0)
			ok, err := s.CompareAndSwap(ctx, "CompareAndSwap", []byte("old"), v, 0)
			if err == nil && !ok {
				err = errors.New("CompareAndSwap of the current value reported false")
			}
			return err
		}},
	}
	for _, w := range writes {
		t.Run(w.name, func(t *testing.T) {
			v := []byte("original")
			if err := w.write(v); err != nil {
				t.Fatal(err)
			}
			copy(v, "CHANGED!")
			got := mustGet(t, s, w.name)
			if string(got) != "original" {
				t.Fatalf("after changing the caller's slice, Get = %q", got)
			}
			copy(got, "CHANGED!")
			wantValue(t, s, w.name, "original")
		})
	}
	t.Run("Take", func(t *testing.T) {
		mustPut(t, s, "t1", "original", 0)
		got, err := s.Take(ctx, "t1")
		if err != nil || string(got) != "original" {
			t.Fatalf("Take = %q, %v", got, err)
		}
		// The returned slice is the caller's even when the key is written
		// again at once.
		mustPut(t, s, "t1", "newvalue", 0)
		if string(got) != "original" {
			t.Fatalf("Take's result changed to %q by a later Put", got)
		}
	})
}

func testInvalid(t *testing.T, s kv.Store) {
	ctx := t.Context()
	v := []byte("v")
	ops := map[string]func(key string, ttl time.Duration) error{
		"Get":    func(k string, _ time.Duration) error { _, err := s.Get(ctx, k); return err },
		"Delete": func(k string, _ time.Duration) error { return s.Delete(ctx, k) },
		"Take":   func(k string, _ time.Duration) error { _, err := s.Take(ctx, k); return err },
		"CompareAndDelete": func(k string, _ time.Duration) error {
			_, err := s.CompareAndDelete(ctx, k, v)
			return err
		},
		"Put": func(k string, ttl time.Duration) error { return s.Put(ctx, k, v, ttl) },
		"PutIfAbsent": func(k string, ttl time.Duration) error {
			_, err := s.PutIfAbsent(ctx, k, v, ttl)
			return err
		},
		"CompareAndSwap": func(k string, ttl time.Duration) error {
			_, err := s.CompareAndSwap(ctx, k, v, []byte("w"), ttl)
			return err
		},
	}
	withTTL := map[string]bool{"Put": true, "PutIfAbsent": true, "CompareAndSwap": true}
	for name, op := range ops {
		t.Run(name+" empty key", func(t *testing.T) {
			err := op("", 0)
			if err == nil || errors.Is(err, kv.ErrNotFound) || errors.Is(err, kv.ErrUnavailable) {
				t.Fatalf("%s(\"\") = %v, want an argument error", name, err)
			}
		})
		if !withTTL[name] {
			continue
		}
		t.Run(name+" negative ttl", func(t *testing.T) {
			// The key holds v, so each operation would otherwise write.
			mustPut(t, s, "neg-"+name, "v", 0)
			key := "neg-" + name
			if name == "PutIfAbsent" {
				key = "neg-absent"
			}
			err := op(key, -time.Second)
			if err == nil || errors.Is(err, kv.ErrNotFound) || errors.Is(err, kv.ErrUnavailable) {
				t.Fatalf("%s with ttl -1s = %v, want an argument error", name, err)
			}
			if name == "PutIfAbsent" {
				wantMissing(t, s, key)
			} else {
				wantValue(t, s, key, "v")
			}
		})
	}
}

func testCanceled(t *testing.T, s kv.Store) {
	mustPut(t, s, "k", "v", 0)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	v := []byte("v")
	ops := map[string]func() error{
		"Get":    func() error { _, err := s.Get(ctx, "k"); return err },
		"Put":    func() error { return s.Put(ctx, "k", []byte("new"), 0) },
		"Delete": func() error { return s.Delete(ctx, "k") },
		"Take":   func() error { _, err := s.Take(ctx, "k"); return err },
		"PutIfAbsent": func() error {
			_, err := s.PutIfAbsent(ctx, "absent", v, 0)
			return err
		},
		"CompareAndSwap": func() error {
			_, err := s.CompareAndSwap(ctx, "k", v, []byte("new"), 0)
			return err
		},
		"CompareAndDelete": func() error {
			_, err := s.CompareAndDelete(ctx, "k", v)
			return err
		},
	}
	for name, op := range ops {
		if err := op(); !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a canceled context = %v, want context.Canceled", name, err)
		}
	}
	wantValue(t, s, "k", "v")
	wantMissing(t, s, "absent")
}

func testTake(t *testing.T, s kv.Store) {
	ctx := t.Context()
	if v, err := s.Take(ctx, "k"); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("Take(missing) = %q, %v; want ErrNotFound", v, err)
	}
	mustPut(t, s, "k", "v", time.Hour)
	got, err := s.Take(ctx, "k")
	if err != nil || string(got) != "v" {
		t.Fatalf("Take = %q, %v; want v", got, err)
	}
	wantMissing(t, s, "k")
	if v, err := s.Take(ctx, "k"); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("second Take = %q, %v; want ErrNotFound", v, err)
	}
}

func testPutIfAbsent(t *testing.T, s kv.Store) {
	ctx := t.Context()
	ok, err := s.PutIfAbsent(ctx, "k", []byte("first"), 0)
	if err != nil || !ok {
		t.Fatalf("PutIfAbsent(missing) = %v, %v; want true", ok, err)
	}
	wantValue(t, s, "k", "first")
	ok, err = s.PutIfAbsent(ctx, "k", []byte("second"), 0)
	if err != nil || ok {
		t.Fatalf("PutIfAbsent(present) = %v, %v; want false", ok, err)
	}
	wantValue(t, s, "k", "first")
	// A key holding an empty value exists.
	mustPut(t, s, "empty", "", 0)
	if ok, err := s.PutIfAbsent(ctx, "empty", []byte("x"), 0); err != nil || ok {
		t.Fatalf("PutIfAbsent over an empty value = %v, %v; want false", ok, err)
	}
}

func testCompareAndSwap(t *testing.T, s kv.Store) {
	cases := []struct {
		name        string
		setup       func(t *testing.T)
		old, value  string
		wantSwapped bool
		want        string // value afterwards, "" with wantGone
		wantGone    bool
	}{
		{name: "current value", setup: put(s, "v1"), old: "v1", value: "v2", wantSwapped: true, want: "v2"},
		{name: "other value", setup: put(s, "v1"), old: "v0", value: "v2", want: "v1"},
		{name: "prefix of value", setup: put(s, "v1"), old: "v", value: "v2", want: "v1"},
		{name: "missing key", setup: func(*testing.T) {}, old: "v1", value: "v2", wantGone: true},
		{name: "missing key, empty old", setup: func(*testing.T) {}, old: "", value: "v2", wantGone: true},
		{name: "empty value", setup: put(s, ""), old: "", value: "v2", wantSwapped: true, want: "v2"},
		{name: "to empty value", setup: put(s, "v1"), old: "v1", value: "", wantSwapped: true, want: ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s.Delete(t.Context(), "k")
			c.setup(t)
			swapped, err := s.CompareAndSwap(t.Context(), "k", []byte(c.old), []byte(c.value), 0)
			if err != nil || swapped != c.wantSwapped {
				t.Fatalf("CompareAndSwap(%q -> %q) = %v, %v; want %v", c.old, c.value, swapped, err, c.wantSwapped)
			}
			if c.wantGone {
				wantMissing(t, s, "k")
			} else {
				wantValue(t, s, "k", c.want)
			}
		})
	}
}

func testCompareAndDelete(t *testing.T, s kv.Store) {
	cases := []struct {
		name        string
		setup       func(t *testing.T)
		old         string
		wantDeleted bool
	}{
		{"current value", put(s, "lease-1"), "lease-1", true},
		{"other value", put(s, "lease-1"), "lease-2", false},
		{"missing key", func(*testing.T) {}, "lease-1", false},
		{"missing key, empty old", func(*testing.T) {}, "", false},
		{"empty value", put(s, ""), "", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s.Delete(t.Context(), "k")
			c.setup(t)
			before, _ := s.Get(t.Context(), "k")
			deleted, err := s.CompareAndDelete(t.Context(), "k", []byte(c.old))
			if err != nil || deleted != c.wantDeleted {
				t.Fatalf("CompareAndDelete(%q) = %v, %v; want %v", c.old, deleted, err, c.wantDeleted)
			}
			_, err = s.Get(t.Context(), "k")
			switch {
			case c.wantDeleted && !errors.Is(err, kv.ErrNotFound):
				t.Fatalf("after CompareAndDelete, Get = %v; want ErrNotFound", err)
			case !c.wantDeleted && before != nil:
				wantValue(t, s, "k", string(before))
			}
		})
	}
}

// testTTL covers expiry. Each case waits a second or more, so they run in
// parallel, each on its own store; no case asserts how soon a key goes,
// only that it never goes early and does go.
func testTTL(t *testing.T, open func(t *testing.T) kv.Store) {
	t.Run("expires, never early", func(t *testing.T) {
		for _, ttl := range []time.Duration{time.Second, 1500 * time.Millisecond} {
			t.Run(ttl.String(), func(t *testing.T) {
				t.Parallel()
				s := open(t)
				start := time.Now()
				mustPut(t, s, "k", "v", ttl)
				gone := waitGone(t, s, "k")
				if lived := gone.Sub(start); lived < ttl {
					t.Fatalf("key with ttl %v was gone after %v", ttl, lived)
				}
			})
		}
	})
	t.Run("zero ttl and long ttl stay", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		mustPut(t, s, "forever", "v", 0)
		mustPut(t, s, "day", "v", 24*time.Hour)
		mustPut(t, s, "witness", "w", time.Second)
		waitGone(t, s, "witness")
		wantValue(t, s, "forever", "v")
		wantValue(t, s, "day", "v")
	})
	t.Run("Put replaces the expiry", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		mustPut(t, s, "kept", "v", time.Second)
		mustPut(t, s, "kept", "v2", 0)
		mustPut(t, s, "shortened", "v", 0)
		mustPut(t, s, "shortened", "v2", time.Second)
		mustPut(t, s, "witness", "w", time.Second)
		waitGone(t, s, "witness")
		waitGone(t, s, "shortened")
		wantValue(t, s, "kept", "v2")
	})
	t.Run("expired key is absent to every operation", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		ctx := t.Context()
		for _, k := range []string{"get", "take", "pia", "cas", "cad"} {
			mustPut(t, s, k, "v", time.Second)
		}
		for _, k := range []string{"get", "take", "pia", "cas", "cad"} {
			waitGone(t, s, k)
		}
		if v, err := s.Take(ctx, "take"); !errors.Is(err, kv.ErrNotFound) {
			t.Errorf("Take(expired) = %q, %v; want ErrNotFound", v, err)
		}
		if ok, err := s.CompareAndSwap(ctx, "cas", []byte("v"), []byte("w"), 0); ok || err != nil {
			t.Errorf("CompareAndSwap(expired) = %v, %v; want false", ok, err)
		}
		if ok, err := s.CompareAndDelete(ctx, "cad", []byte("v")); ok || err != nil {
			t.Errorf("CompareAndDelete(expired) = %v, %v; want false", ok, err)
		}
		if ok, err := s.PutIfAbsent(ctx, "pia", []byte("new"), 0); !ok || err != nil {
			t.Errorf("PutIfAbsent(expired) = %v, %v; want true", ok, err)
		}
		wantValue(t, s, "pia", "new")
		wantMissing(t, s, "cas")
	})
	t.Run("PutIfAbsent with ttl", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		start := time.Now()
		if ok, err := s.PutIfAbsent(t.Context(), "k", []byte("v"), time.Second); !ok || err != nil {
			t.Fatalf("PutIfAbsent = %v, %v", ok, err)
		}
		if lived := waitGone(t, s, "k").Sub(start); lived < time.Second {
			t.Fatalf("key with ttl 1s was gone after %v", lived)
		}
	})
	t.Run("CompareAndSwap sets the expiry", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		ctx := t.Context()
		mustPut(t, s, "expiring", "v", 0)
		mustPut(t, s, "kept", "v", time.Second)
		start := time.Now()
		if ok, err := s.CompareAndSwap(ctx, "expiring", []byte("v"), []byte("w"), time.Second); !ok || err != nil {
			t.Fatalf("CompareAndSwap = %v, %v", ok, err)
		}
		if ok, err := s.CompareAndSwap(ctx, "kept", []byte("v"), []byte("w"), 0); !ok || err != nil {
			t.Fatalf("CompareAndSwap = %v, %v", ok, err)
		}
		mustPut(t, s, "witness", "w", time.Second)
		if lived := waitGone(t, s, "expiring").Sub(start); lived < time.Second {
			t.Fatalf("key swapped with ttl 1s was gone after %v", lived)
		}
		waitGone(t, s, "witness")
		wantValue(t, s, "kept", "w")
	})
}

// testConcurrent races n callers on one key, several rounds: of each
// crowd exactly one may win.
func testConcurrent(t *testing.T, s kv.Store) {
	const n, rounds = 16, 10
	ctx := t.Context()
	t.Run("Take", func(t *testing.T) {
		for round := range rounds {
			mustPut(t, s, "take", "prize", 0)
			var wins count
			race(n, func(int) {
				v, err := s.Take(ctx, "take")
				switch {
				case err == nil && string(v) == "prize":
					wins.add()
				case errors.Is(err, kv.ErrNotFound):
				default:
					t.Errorf("Take = %q, %v", v, err)
				}
			})
			if got := wins.get(); got != 1 {
				t.Fatalf("round %d: %d of %d concurrent Takes got the value, want 1", round, got, n)
			}
		}
	})
	t.Run("PutIfAbsent", func(t *testing.T) {
		for round := range rounds {
			key := fmt.Sprintf("pia-%d", round)
			var wins count
			winner := -1
			var mu sync.Mutex
			race(n, func(i int) {
				ok, err := s.PutIfAbsent(ctx, key, fmt.Appendf(nil, "caller-%d", i), time.Hour)
				if err != nil {
					t.Errorf("PutIfAbsent: %v", err)
				}
				if ok {
					wins.add()
					mu.Lock()
					winner = i
					mu.Unlock()
				}
			})
			if got := wins.get(); got != 1 {
				t.Fatalf("round %d: %d of %d concurrent PutIfAbsent reported true, want 1", round, got, n)
			}
			wantValue(t, s, key, fmt.Sprintf("caller-%d", winner))
		}
	})
	t.Run("CompareAndSwap", func(t *testing.T) {
		for round := range rounds {
			mustPut(t, s, "cas", "token-0", 0)
			var wins count
			winner := -1
			var mu sync.Mutex
			race(n, func(i int) {
				ok, err := s.CompareAndSwap(ctx, "cas", []byte("token-0"), fmt.Appendf(nil, "token-from-%d", i), 0)
				if err != nil {
					t.Errorf("CompareAndSwap: %v", err)
				}
				if ok {
					wins.add()
					mu.Lock()
					winner = i
					mu.Unlock()
				}
			})
			if got := wins.get(); got != 1 {
				t.Fatalf("round %d: %d of %d concurrent CompareAndSwap reported true, want 1", round, got, n)
			}
			wantValue(t, s, "cas", fmt.Sprintf("token-from-%d", winner))
		}
	})
	t.Run("CompareAndDelete", func(t *testing.T) {
		for round := range rounds {
			mustPut(t, s, "cad", "lease", 0)
			var wins count
			race(n, func(int) {
				ok, err := s.CompareAndDelete(ctx, "cad", []byte("lease"))
				if err != nil {
					t.Errorf("CompareAndDelete: %v", err)
				}
				if ok {
					wins.add()
				}
			})
			if got := wins.get(); got != 1 {
				t.Fatalf("round %d: %d of %d concurrent CompareAndDelete reported true, want 1", round, got, n)
			}
			wantMissing(t, s, "cad")
		}
	})
}

type count struct {
	mu sync.Mutex
	n  int
}

func (c *count) add() { c.mu.Lock(); c.n++; c.mu.Unlock() }
func (c *count) get() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// race runs fn on n goroutines released at once and waits for them.
func race(n int, fn func(i int)) {
	var start, done sync.WaitGroup
	start.Add(1)
	for i := range n {
		done.Add(1)
		go func() {
			defer done.Done()
			start.Wait()
			fn(i)
		}()
	}
	start.Done()
	done.Wait()
}

func put(s kv.Store, v string) func(t *testing.T) {
	return func(t *testing.T) { mustPut(t, s, "k", v, 0) }
}

func mustPut(t *testing.T, s kv.Store, key, value string, ttl time.Duration) {
	t.Helper()
	if err := s.Put(t.Context(), key, []byte(value), ttl); err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
}

func mustGet(t *testing.T, s kv.Store, key string) []byte {
	t.Helper()
	v, err := s.Get(t.Context(), key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	return v
}

func wantValue(t *testing.T, s kv.Store, key, want string) {
	t.Helper()
	if got := mustGet(t, s, key); string(got) != want {
		t.Fatalf("Get(%q) = %q, want %q", key, got, want)
	}
}

func wantMissing(t *testing.T, s kv.Store, key string) {
	t.Helper()
	if v, err := s.Get(t.Context(), key); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("Get(%q) = %q, %v; want ErrNotFound", key, v, err)
	}
}

// waitGone polls key until it is gone and returns when that was seen.
func waitGone(t *testing.T, s kv.Store, key string) time.Time {
	t.Helper()
	var gone time.Time
	poll.Until(t, key+" to expire", func() bool {
		_, err := s.Get(t.Context(), key)
		if err != nil && !errors.Is(err, kv.ErrNotFound) {
			t.Fatalf("Get(%q): %v", key, err)
		}
		gone = time.Now()
		return err != nil
	})
	return gone
}
