package kv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/100steps/wxappliance/appliance/poll"
)

func openTest(t testing.TB, dir string, opts BadgerOptions) *Badger {
	t.Helper()
	b, err := OpenBadger(dir, opts)
	if err != nil {
		t.Fatalf("OpenBadger(%q): %v", dir, err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return b
}

func mustGet(t *testing.T, s Store, key string) []byte {
	t.Helper()
	v, err := s.Get(t.Context(), key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	return v
}

func mustPut(t *testing.T, s Store, key, value string, ttl time.Duration) {
	t.Helper()
	if err := s.Put(t.Context(), key, []byte(value), ttl); err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
}

func TestGetPutDelete(t *testing.T) {
	ctx := t.Context()
	b := openTest(t, t.TempDir(), BadgerOptions{})

	if _, err := b.Get(ctx, "missing"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get(missing) = %v, want ErrNotFound", err)
	}
	if err := b.Delete(ctx, "missing"); err != nil {
		t.Fatalf("Delete(missing) = %v, want nil", err)
	}

	steps := []struct {
		name  string
		do    func() error
		key   string
		want  string // "" means ErrNotFound
		noKey bool
	}{
		{"put", func() error { return b.Put(ctx, "a", []byte("1"), 0) }, "a", "1", false},
		{"overwrite", func() error { return b.Put(ctx, "a", []byte("2"), 0) }, "a", "2", false},
		{"empty value", func() error { return b.Put(ctx, "e", nil, 0) }, "e", "", false},
		{"binary", func() error { return b.Put(ctx, "bin", []byte{0, 255, 0}, time.Hour) }, "bin", "\x00\xff\x00", false},
		{"delete", func() error { return b.Delete(ctx, "a") }, "a", "", true},
		{"put after delete", func() error { return b.Put(ctx, "a", []byte("3"), 0) }, "a", "3", false},
	}
	for _, st := range steps {
		if err := st.do(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		got, err := b.Get(ctx, st.key)
		if st.noKey {
			if !errors.Is(err, ErrNotFound) {
				t.Fatalf("%s: Get(%q) = %q, %v; want ErrNotFound", st.name, st.key, got, err)
			}
			continue
		}
		if err != nil || string(got) != st.want {
			t.Fatalf("%s: Get(%q) = %q, %v; want %q", st.name, st.key, got, err, st.want)
		}
	}
}

func TestValuesAreCopies(t *testing.T) {
	ctx := t.Context()
	b := openTest(t, t.TempDir(), BadgerOptions{})

	in := []byte("hello")
	if err := b.Put(ctx, "k", in, 0); err != nil {
		t.Fatal(err)
	}
	in[0] = 'J' // the store must not have kept the caller's slice
	out := mustGet(t, b, "k")
	if string(out) != "hello" {
		t.Fatalf("after mutating Put's input, Get = %q", out)
	}
	out[0] = 'X'
	if got := mustGet(t, b, "k"); string(got) != "hello" {
		t.Fatalf("after mutating Get's result, Get = %q", got)
	}
	taken, err := b.Take(ctx, "k")
	if err != nil || string(taken) != "hello" {
		t.Fatalf("Take = %q, %v", taken, err)
	}
}

func TestInvalidArguments(t *testing.T) {
	b := openTest(t, t.TempDir(), BadgerOptions{})
	ctx := t.Context()
	canceled, cancel := context.WithCancel(ctx)
	cancel()

	tests := []struct {
		name string
		call func() error
		want error // nil means any non-nil error
	}{
		{"Get empty key", func() error { _, err := b.Get(ctx, ""); return err }, errEmptyKey},
		{"Put empty key", func() error { return b.Put(ctx, "", []byte("v"), 0) }, errEmptyKey},
		{"Delete empty key", func() error { return b.Delete(ctx, "") }, errEmptyKey},
		{"Take empty key", func() error { _, err := b.Take(ctx, ""); return err }, errEmptyKey},
		{"PutIfAbsent empty key", func() error { _, err := b.PutIfAbsent(ctx, "", []byte("v"), 0); return err }, errEmptyKey},
		{"Put negative ttl", func() error { return b.Put(ctx, "k", []byte("v"), -time.Second) }, errNegativeTTL},
		{"PutIfAbsent negative ttl", func() error { _, err := b.PutIfAbsent(ctx, "k", []byte("v"), -1); return err }, errNegativeTTL},
		{"Badger reserved key", func() error { return b.Put(ctx, "!badger!head", []byte("v"), 0) }, nil},
		{"Get canceled", func() error { _, err := b.Get(canceled, "k"); return err }, context.Canceled},
		{"Put canceled", func() error { return b.Put(canceled, "k", []byte("v"), 0) }, context.Canceled},
		{"Delete canceled", func() error { return b.Delete(canceled, "k") }, context.Canceled},
		{"Take canceled", func() error { _, err := b.Take(canceled, "k"); return err }, context.Canceled},
		{"PutIfAbsent canceled", func() error { _, err := b.PutIfAbsent(canceled, "k", []byte("v"), 0); return err }, context.Canceled},
		{"Backup canceled", func() error { return b.Backup(canceled, new(bytes.Buffer)) }, context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if err == nil || (tt.want != nil && !errors.Is(err, tt.want)) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
	// None of the rejected writes may have happened.
	if v, err := b.Get(ctx, "k"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get(k) = %q, %v; want ErrNotFound", v, err)
	}
}

// expiryOf is when the store will drop key.
func expiryOf(t *testing.T, b *Badger, key string) time.Time {
	t.Helper()
	var at time.Time
	err := b.EachPrefix(t.Context(), key, func(k string, _ []byte, expiresAt time.Time) error {
		if k == key {
			at = expiresAt
		}
		return nil
	})
	if err != nil || at.IsZero() {
		t.Fatalf("expiry of %q: %v, %v", key, at, err)
	}
	return at
}

// Badger stores an expiry in whole Unix seconds. The store rounds it up to
// the next one, so a key never goes before its ttl and goes at most a
// second after. (That keys do go, and never early, on every backend, is
// the conformance suite's TTL test.)
func TestTTLRoundsUp(t *testing.T) {
	b := openTest(t, t.TempDir(), BadgerOptions{})
	for _, ttl := range []time.Duration{time.Second, 1500 * time.Millisecond, 90 * time.Second} {
		key := "ttl-" + ttl.String()
		start := time.Now()
		mustPut(t, b, key, "v", ttl)
		put := time.Now()
		if at := expiryOf(t, b, key); at.Before(start.Add(ttl)) || at.After(put.Add(ttl+time.Second)) {
			t.Fatalf("key with ttl %v put between %v and %v expires at %v", ttl, start, put, at)
		}
	}
}

func TestReopen(t *testing.T) {
	dir := t.TempDir()
	b, err := OpenBadger(dir, BadgerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, b, "plain", "1", 0)
	mustPut(t, b, "session", "2", time.Hour)
	mustPut(t, b, "deleted", "3", 0)
	if err := b.Delete(t.Context(), "deleted"); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	b = openTest(t, dir, BadgerOptions{})
	for key, want := range map[string]string{"plain": "1", "session": "2"} {
		if got := mustGet(t, b, key); string(got) != want {
			t.Errorf("after reopen Get(%q) = %q, want %q", key, got, want)
		}
	}
	if _, err := b.Get(t.Context(), "deleted"); !errors.Is(err, ErrNotFound) {
		t.Errorf("after reopen deleted key: %v, want ErrNotFound", err)
	}
}

func TestOpenLocked(t *testing.T) {
	dir := t.TempDir()
	openTest(t, dir, BadgerOptions{})

	b, err := OpenBadger(dir, BadgerOptions{})
	if err == nil {
		b.Close()
		t.Fatal("second OpenBadger of an open dir succeeded")
	}
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("err = %v, want ErrLocked", err)
	}
	if !strings.Contains(err.Error(), dir) {
		t.Fatalf("err %q does not name the directory %q", err, dir)
	}
}

func TestOpenBadDir(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(file, "db") // a directory cannot be made under a file
	_, err := OpenBadger(dir, BadgerOptions{})
	if err == nil {
		t.Fatal("OpenBadger under a regular file succeeded")
	}
	if errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("err = %v; want a non-lock error naming %q", err, dir)
	}
	if _, err := OpenBadger("", BadgerOptions{}); err == nil {
		t.Fatal(`OpenBadger("") succeeded`)
	}
}

func TestClosed(t *testing.T) {
	b, err := OpenBadger(t.TempDir(), BadgerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Ready(); err != nil {
		t.Fatalf("Ready before Close = %v", err)
	}
	mustPut(t, b, "k", "v", 0)
	if err := b.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}

	ctx := t.Context()
	calls := map[string]func() error{
		"Ready":       b.Ready,
		"Get":         func() error { _, err := b.Get(ctx, "k"); return err },
		"Put":         func() error { return b.Put(ctx, "k", []byte("v"), 0) },
		"Delete":      func() error { return b.Delete(ctx, "k") },
		"Take":        func() error { _, err := b.Take(ctx, "k"); return err },
		"PutIfAbsent": func() error { _, err := b.PutIfAbsent(ctx, "k", []byte("v"), 0); return err },
		"Backup":      func() error { return b.Backup(ctx, new(bytes.Buffer)) },
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", name, err)
		}
	}
}

// TestCloseWhileBusy closes the store under concurrent traffic: every call
// must either work or report ErrClosed, never panic on a closed Badger.
func TestCloseWhileBusy(t *testing.T) {
	b, err := OpenBadger(t.TempDir(), BadgerOptions{GCInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	var wg sync.WaitGroup
	errs := make(chan error, 1000)
	var calls atomic.Int64
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				calls.Add(1)
				key := fmt.Sprintf("k%d", i%16)
				var err error
				switch (w + i) % 4 {
				case 0:
					err = b.Put(ctx, key, []byte("v"), time.Minute)
				case 1:
					_, err = b.Get(ctx, key)
				case 2:
					_, err = b.Take(ctx, key)
				case 3:
					_, err = b.PutIfAbsent(ctx, key, []byte("v"), 0)
				}
				switch {
				case errors.Is(err, ErrClosed):
					return
				case err != nil && !errors.Is(err, ErrNotFound):
					errs <- err
					return
				}
			}
		})
	}
	// Close once every goroutine is well into its traffic.
	poll.Until(t, "traffic on the store", func() bool { return calls.Load() >= 800 })
	if err := b.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestBackupRestore(t *testing.T) {
	ctx := t.Context()
	src := openTest(t, t.TempDir(), BadgerOptions{})
	want := map[string]string{"a": "1", "b": "2", "session": "3"}
	for k, v := range want {
		ttl := time.Duration(0)
		if k == "session" {
			ttl = time.Hour
		}
		mustPut(t, src, k, v, ttl)
	}
	mustPut(t, src, "gone", "x", 0)
	if err := src.Delete(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	var backup bytes.Buffer
	if err := src.Backup(ctx, &backup); err != nil {
		t.Fatalf("Backup: %v", err)
	}
	// The source stays usable after an online backup.
	mustPut(t, src, "after", "4", 0)

	dir := filepath.Join(t.TempDir(), "restored") // Restore creates it
	if err := Restore(dir, bytes.NewReader(backup.Bytes()), BadgerOptions{}); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	dst := openTest(t, dir, BadgerOptions{})
	for k, v := range want {
		if got := mustGet(t, dst, k); string(got) != v {
			t.Errorf("restored Get(%q) = %q, want %q", k, got, v)
		}
	}
	for _, k := range []string{"gone", "after"} {
		if _, err := dst.Get(ctx, k); !errors.Is(err, ErrNotFound) {
			t.Errorf("restored Get(%q) = %v, want ErrNotFound", k, err)
		}
	}

	// dir is now in use and not empty; the check must come before the lock.
	err := Restore(dir, bytes.NewReader(backup.Bytes()), BadgerOptions{})
	if err == nil || errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("Restore into non-empty dir = %v; want an error naming %q", err, dir)
	}
}

func TestRestoreGarbageLeavesDirEmpty(t *testing.T) {
	dir := t.TempDir()
	err := Restore(dir, strings.NewReader("\x10\x00\x00\x00\x00\x00\x00\x00not a backup at all"), BadgerOptions{})
	if err == nil {
		t.Fatal("Restore of garbage succeeded")
	}
	entries, rerr := os.ReadDir(dir)
	if rerr != nil {
		t.Fatal(rerr)
	}
	if len(entries) != 0 {
		t.Fatalf("failed Restore left %d entries in %s", len(entries), dir)
	}
}

// recorder is a slog.Handler that keeps what it is given.
type recorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *recorder) WithGroup(string) slog.Handler            { return r }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.records = append(r.records, rec)
	return nil
}

func (r *recorder) find(substr string) (slog.Record, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rec := range r.records {
		if strings.Contains(rec.Message, substr) {
			return rec, true
		}
	}
	return slog.Record{}, false
}

func TestBadgerLogger(t *testing.T) {
	rec := new(recorder)
	l := badgerLogger{slog.New(rec)}
	tests := []struct {
		log  func(string, ...any)
		want slog.Level
	}{
		{l.Errorf, slog.LevelError},
		{l.Warningf, slog.LevelWarn},
		{l.Infof, slog.LevelDebug},
		{l.Debugf, levelTrace},
	}
	for i, tt := range tests {
		tt.log("line %d\n", i)
		got, ok := rec.find(fmt.Sprintf("line %d", i))
		if !ok {
			t.Fatalf("line %d not logged", i)
		}
		if got.Level != tt.want || got.Message != fmt.Sprintf("line %d", i) {
			t.Errorf("line %d logged as %v %q, want %v without the newline", i, got.Level, got.Message, tt.want)
		}
	}
}

func TestGCLoop(t *testing.T) {
	dir := t.TempDir()
	rec := new(recorder)
	b, err := OpenBadger(dir, BadgerOptions{Logger: slog.New(rec), GCInterval: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	// Values above the 64 KiB ValueThreshold go to the value log, so
	// overwriting them leaves garbage there for GC to find.
	big := bytes.Repeat([]byte("x"), 100<<10)
	for round := range 20 {
		for k := range 10 {
			big[0] = byte(round)
			if err := b.Put(t.Context(), fmt.Sprint(k), big, 0); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Wait for evidence that RunValueLogGC was actually called: Badger
	// logs one of these when it looks for a file to rewrite.
	gcRan := func() bool {
		for _, msg := range []string{"No file with discard stats", "less than threshold", "Rewriting fid"} {
			if _, ok := rec.find(msg); ok {
				return true
			}
		}
		return false
	}
	poll.Until(t, "the value log GC to run", gcRan)
	if err := b.Close(); err != nil {
		t.Fatalf("Close with GC running = %v", err)
	}
	if r, ok := rec.find("GC panicked"); ok {
		t.Fatalf("GC panicked: %v", r)
	}

	b = openTest(t, dir, BadgerOptions{})
	for k := range 10 {
		got := mustGet(t, b, fmt.Sprint(k))
		if len(got) != len(big) || got[0] != 19 {
			t.Fatalf("key %d after GC and reopen: len %d round %d", k, len(got), got[0])
		}
	}
}

func TestInMemory(t *testing.T) {
	b := openTest(t, "", BadgerOptions{InMemory: true})
	mustPut(t, b, "k", "v", 0)
	if got := mustGet(t, b, "k"); string(got) != "v" {
		t.Fatalf("Get = %q", got)
	}
	if err := Restore(t.TempDir(), strings.NewReader(""), BadgerOptions{InMemory: true}); err == nil {
		t.Fatal("Restore with InMemory succeeded")
	}
}

func BenchmarkGetPut(b *testing.B) {
	s := openTest(b, b.TempDir(), BadgerOptions{})
	ctx := context.Background()
	val := bytes.Repeat([]byte("v"), 256)
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = fmt.Sprintf("session:%04d", i)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		key := keys[i%len(keys)]
		i++
		if err := s.Put(ctx, key, val, time.Hour); err != nil {
			b.Fatal(err)
		}
		if _, err := s.Get(ctx, key); err != nil {
			b.Fatal(err)
		}
	}
}
