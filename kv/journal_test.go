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
	"testing"
	"time"
)

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func openJournalTest(t *testing.T, dir string, opts JournalOptions) *Journal {
	t.Helper()
	j, err := OpenJournal(dir, opts)
	if err != nil {
		t.Fatalf("OpenJournal: %v", err)
	}
	t.Cleanup(func() { j.Close() })
	return j
}

func journalValue(t *testing.T, j *Journal, key string) string {
	t.Helper()
	v, err := j.Get(t.Context(), key)
	if errors.Is(err, ErrNotFound) {
		return "<missing>"
	}
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	return string(v)
}

func mustJournalPut(t *testing.T, j *Journal, key, value string, ttl time.Duration) {
	t.Helper()
	if err := j.Put(t.Context(), key, []byte(value), ttl); err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
}

func TestJournalPutGet(t *testing.T) {
	for _, inMemory := range []bool{false, true} {
		t.Run(fmt.Sprintf("in memory %v", inMemory), func(t *testing.T) {
			j := openJournalTest(t, t.TempDir(), JournalOptions{InMemory: inMemory})
			if got := journalValue(t, j, "k"); got != "<missing>" {
				t.Fatalf("empty journal: %q", got)
			}
			mustJournalPut(t, j, "k", "v1", time.Hour)
			mustJournalPut(t, j, "other", "", time.Hour)
			binary := string([]byte{0, 0xff, '\n', 'x'})
			mustJournalPut(t, j, "bin", binary, time.Hour)
			if got := journalValue(t, j, "k"); got != "v1" {
				t.Fatalf("k = %q", got)
			}
			mustJournalPut(t, j, "k", "v2", time.Hour) // shadows v1
			for key, want := range map[string]string{"k": "v2", "other": "", "bin": binary, "nope": "<missing>"} {
				if got := journalValue(t, j, key); got != want {
					t.Errorf("%s = %q, want %q", key, got, want)
				}
			}
			// Values are copies both ways.
			in := []byte("mutable")
			if err := j.Put(t.Context(), "copy", in, time.Hour); err != nil {
				t.Fatal(err)
			}
			in[0] = 'X'
			out, _ := j.Get(t.Context(), "copy")
			out[1] = 'Y'
			if got := journalValue(t, j, "copy"); got != "mutable" {
				t.Fatalf("copy = %q", got)
			}
		})
	}
}

func TestJournalRefuses(t *testing.T) {
	j := openJournalTest(t, t.TempDir(), JournalOptions{})
	ctx := t.Context()
	for name, err := range map[string]error{
		"empty key":  j.Put(ctx, "", []byte("v"), time.Hour),
		"zero ttl":   j.Put(ctx, "k", []byte("v"), 0),
		"long key":   j.Put(ctx, strings.Repeat("k", 1<<16), []byte("v"), time.Hour),
		"closed ctx": j.Put(canceled(t), "k", []byte("v"), time.Hour),
	} {
		if err == nil {
			t.Errorf("%s accepted", name)
		}
	}
	if _, err := j.Get(ctx, ""); err == nil {
		t.Error("Get of an empty key accepted")
	}
	j.Close()
	if err := j.Put(ctx, "k", []byte("v"), time.Hour); !errors.Is(err, ErrClosed) {
		t.Errorf("Put after Close = %v", err)
	}
	if _, err := j.Get(ctx, "k"); !errors.Is(err, ErrClosed) {
		t.Errorf("Get after Close = %v", err)
	}
}

func canceled(t *testing.T) context.Context {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	return ctx
}

// A record expires after its ttl, and a segment file goes once every record
// in it has expired: at the next write that starts a segment, or at open.
func TestJournalExpiry(t *testing.T) {
	dir := t.TempDir()
	clock := &fakeClock{now: time.Unix(1_700_000_000, 0)}
	j := openJournalTest(t, dir, JournalOptions{now: clock.Now})
	mustJournalPut(t, j, "short", "s", time.Minute)
	mustJournalPut(t, j, "long", "l", 11*time.Minute)
	clock.Add(59 * time.Second)
	if got := journalValue(t, j, "short"); got != "s" {
		t.Fatalf("short before its ttl = %q", got)
	}
	clock.Add(time.Second)
	if got := journalValue(t, j, "short"); got != "<missing>" {
		t.Fatalf("short at its ttl = %q", got)
	}

	// Later segments, each a span apart.
	for i := range 3 {
		clock.Add(segmentSpan)
		mustJournalPut(t, j, fmt.Sprint("later", i), "x", 5*time.Minute)
	}
	if n := segmentFiles(t, dir); n != 4 {
		t.Fatalf("%d segment files, want 4 (the first keeps long)", n)
	}
	clock.Add(11 * time.Minute)
	mustJournalPut(t, j, "new", "n", time.Minute)
	if n := segmentFiles(t, dir); n != 1 {
		t.Fatalf("%d segment files once everything expired, want 1", n)
	}
	if got := journalValue(t, j, "long"); got != "<missing>" {
		t.Fatalf("long after its ttl = %q", got)
	}
	if j.Len() != 1 {
		t.Fatalf("index holds %d records, want 1", j.Len())
	}

	// Open deletes segments that expired while nobody had the journal open.
	clock.Add(2 * time.Minute)
	reopened := openJournalTest(t, dir, JournalOptions{now: clock.Now})
	if n := segmentFiles(t, dir); n != 0 || reopened.Len() != 0 {
		t.Fatalf("after open: %d segment files, %d records", n, reopened.Len())
	}
}

func segmentFiles(t *testing.T, dir string) int {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "*.seg"))
	if err != nil {
		t.Fatal(err)
	}
	return len(names)
}

// A process killed without Close leaves its records where the next one
// finds them; a record cut off by the crash ends its segment, and writes go
// to a new segment so that nothing follows the damage.
func TestJournalSurvivesCrash(t *testing.T) {
	dir := t.TempDir()
	first, err := OpenJournal(dir, JournalOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		mustJournalPut(t, first, fmt.Sprint("k", i), fmt.Sprint("answer ", i), time.Hour)
	}
	// No Close: the process died. Its last record was cut short.
	names, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	if len(names) != 1 {
		t.Fatalf("%d segments", len(names))
	}
	info, err := os.Stat(names[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(names[0], info.Size()-3); err != nil {
		t.Fatal(err)
	}

	rec := new(recorder)
	second := openJournalTest(t, dir, JournalOptions{Logger: slog.New(rec)})
	for i := range 99 {
		if got, want := journalValue(t, second, fmt.Sprint("k", i)), fmt.Sprint("answer ", i); got != want {
			t.Fatalf("k%d after the crash = %q, want %q", i, got, want)
		}
	}
	if got := journalValue(t, second, "k99"); got != "<missing>" {
		t.Fatalf("the cut record reads %q", got)
	}
	if rec.count("partial record") != 1 {
		t.Fatalf("the cut record was not logged")
	}
	mustJournalPut(t, second, "after", "crash", time.Hour)
	first.Close()

	// Garbage in the middle of a segment: what precedes it is kept.
	names, _ = filepath.Glob(filepath.Join(dir, "*.seg"))
	if len(names) != 2 {
		t.Fatalf("%d segments after the restart, want the old and a new one", len(names))
	}
	data, err := os.ReadFile(names[0])
	if err != nil {
		t.Fatal(err)
	}
	cut := bytes.Index(data, []byte("answer 50")) // inside record 50
	data[cut] ^= 0xff
	if err := os.WriteFile(names[0], data, 0o600); err != nil {
		t.Fatal(err)
	}
	second.Close()
	third := openJournalTest(t, dir, JournalOptions{Logger: slog.New(rec)})
	for key, want := range map[string]string{"k49": "answer 49", "k50": "<missing>", "k51": "<missing>", "after": "crash"} {
		if got := journalValue(t, third, key); got != want {
			t.Errorf("%s = %q, want %q", key, got, want)
		}
	}
	if rec.count("damaged record") != 1 {
		t.Errorf("the damaged record was not logged")
	}
}

func TestJournalConcurrent(t *testing.T) {
	j := openJournalTest(t, t.TempDir(), JournalOptions{})
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 200 {
				key := fmt.Sprintf("w%d-%d", w, i)
				if err := j.Put(t.Context(), key, []byte(key), time.Hour); err != nil {
					t.Error(err)
					return
				}
				if got := journalValue(t, j, key); got != key {
					t.Errorf("%s = %q", key, got)
					return
				}
			}
		})
	}
	wg.Wait()
	if j.Len() != 8*200 {
		t.Fatalf("%d records, want %d", j.Len(), 8*200)
	}
}

// A journal beside a Badger store shares its free-space floor and its
// lifetime, and lives in a directory of its own inside the store's.
func TestBadgerJournal(t *testing.T) {
	disk := newFakeDisk(1 << 30)
	dir := t.TempDir()
	b := openTest(t, dir, BadgerOptions{MinFree: 64 << 20, freeSpace: disk.freeSpace, spaceInterval: time.Hour})
	j, err := b.Journal("callback")
	if err != nil {
		t.Fatal(err)
	}
	if again, err := b.Journal("callback"); err != nil || again != j {
		t.Fatalf("asking again gave another journal: %v", err)
	}
	if _, err := b.Journal("../x"); err == nil {
		t.Fatal("a journal outside the store's directory accepted")
	}
	mustJournalPut(t, j, "k", "v", time.Hour)
	if n := segmentFiles(t, filepath.Join(dir, "callback")); n != 1 {
		t.Fatalf("%d segments in the journal's directory", n)
	}

	disk.free.Store(3 << 20)
	b.space.look()
	if err := j.Put(t.Context(), "k2", []byte("v"), time.Hour); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Put below the floor = %v, want ErrNoSpace", err)
	}
	if got := journalValue(t, j, "k"); got != "v" {
		t.Fatalf("reads below the floor: %q", got)
	}
	disk.free.Store(1 << 30)
	b.space.look()
	mustJournalPut(t, j, "k2", "v2", time.Hour)

	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := j.Get(t.Context(), "k"); !errors.Is(err, ErrClosed) {
		t.Fatalf("journal after the store closed: %v", err)
	}
	reopened := openTest(t, dir, BadgerOptions{})
	j2, err := reopened.Journal("callback")
	if err != nil {
		t.Fatal(err)
	}
	if got := journalValue(t, j2, "k2"); got != "v2" {
		t.Fatalf("after reopening the store: %q", got)
	}

	mem := openTest(t, "", BadgerOptions{InMemory: true})
	jm, err := mem.Journal("callback")
	if err != nil {
		t.Fatal(err)
	}
	mustJournalPut(t, jm, "k", "v", time.Hour)
	if got := journalValue(t, jm, "k"); got != "v" {
		t.Fatalf("in memory: %q", got)
	}
}

// BenchmarkDedupeRecord is what one callback message writes, on each
// store: in Badger a claim (PutIfAbsent) replaced by the answer
// (CompareAndSwap), on a new key each time; in the journal the answer
// alone (the claim stays in memory). Recorded in BENCHMARKS.md.
func BenchmarkDedupeRecord(b *testing.B) {
	answer := append([]byte{'d'}, bytes.Repeat([]byte("x"), 600)...)
	claim := []byte("p0123456789abcdef")
	ctx := context.Background()
	b.Run("badger", func(b *testing.B) {
		s := openTest(b, b.TempDir(), BadgerOptions{})
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			key := fmt.Sprintf("cb/d/%032x", i)
			i++
			if ok, err := s.PutIfAbsent(ctx, key, claim, 11*time.Minute); !ok || err != nil {
				b.Fatal(ok, err)
			}
			if ok, err := s.CompareAndSwap(ctx, key, claim, answer, 11*time.Minute); !ok || err != nil {
				b.Fatal(ok, err)
			}
		}
	})
	b.Run("journal", func(b *testing.B) {
		j, err := OpenJournal(b.TempDir(), JournalOptions{})
		if err != nil {
			b.Fatal(err)
		}
		defer j.Close()
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			key := fmt.Sprintf("cb/d/%032x", i)
			i++
			if err := j.Put(ctx, key, answer, 11*time.Minute); err != nil {
				b.Fatal(err)
			}
		}
	})
}
