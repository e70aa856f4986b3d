package kv

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/100steps/wxappliance/appliance/poll"
)

// dirUsage returns the bytes the files of dir occupy on disk.
func dirUsage(t *testing.T, dir string) int64 {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, e := range entries {
		info, err := e.Info()
		if err != nil {
			continue
		}
		n += allocated(info)
	}
	return n
}

// flood writes n records of 3 KB with ttl, as a flood of /auth would.
func flood(t *testing.T, b *Badger, prefix string, n int, ttl time.Duration) {
	t.Helper()
	value := bytes.Repeat([]byte("s"), 3000)
	for i := range n {
		if err := b.Put(t.Context(), fmt.Sprintf("%s%08d", prefix, i), value, ttl); err != nil {
			t.Fatal(err)
		}
	}
}

// TestReclaimGivesSpaceBack: after a flood of short-lived records has
// expired, a reclaim leaves the tables holding only what is still live,
// where Badger on its own keeps them all.
func TestReclaimGivesSpaceBack(t *testing.T) {
	dir := t.TempDir()
	b := openTest(t, dir, BadgerOptions{GCInterval: time.Hour})
	for i := range 100 {
		mustPut(t, b, fmt.Sprint("sess/", i), "live", 0)
	}
	flood(t, b, "login/", 6000, 2*time.Second) // 18 MB, several memtables
	poll.Until(t, "the flood to expire", func() bool {
		_, err := b.Get(t.Context(), "login/00005999")
		return errors.Is(err, ErrNotFound)
	})
	before, usage := b.tableSize(), dirUsage(t, dir)
	if before < 4<<20 {
		t.Fatalf("only %d bytes of tables after the flood; the test needs flushed memtables", before)
	}
	if err := b.reclaim(); err != nil {
		t.Fatalf("reclaim: %v", err)
	}
	after := b.tableSize()
	t.Logf("tables %d KiB -> %d KiB, directory %d KiB -> %d KiB", before>>10, after>>10, usage>>10, dirUsage(t, dir)>>10)
	if after > 256<<10 {
		t.Errorf("%d KiB of tables left after reclaiming %d KiB of expired records", after>>10, before>>10)
	}
	if got := dirUsage(t, dir); got > usage/4 {
		t.Errorf("directory uses %d KiB after reclaim, %d KiB before", got>>10, usage>>10)
	}
	for i := range 100 {
		if got := mustGet(t, b, fmt.Sprint("sess/", i)); string(got) != "live" {
			t.Fatalf("live key %d = %q after reclaim", i, got)
		}
	}
	// The reclaim's own keys leave nothing visible behind.
	for _, k := range [][]byte{reclaimPrefix, lowestKey, highestKey} {
		if _, err := b.Get(t.Context(), string(k)); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get(%q) after reclaim = %v", k, err)
		}
	}
	// Writes go on afterwards, and survive a reopen.
	mustPut(t, b, "after", "1", 0)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = openTest(t, dir, BadgerOptions{})
	if got := mustGet(t, b, "after"); string(got) != "1" {
		t.Fatalf("after reopen Get = %q", got)
	}
}

// TestReclaimWhenDue drives maybeReclaim's decision with a clock of its
// own: records count once their minute of expiry is over.
func TestReclaimWhenDue(t *testing.T) {
	var offset atomic.Int64
	now := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	rec := new(recorder)
	disk := newFakeDisk(1 << 30)
	b := openTest(t, t.TempDir(), BadgerOptions{
		Logger:        slog.New(rec),
		GCInterval:    time.Hour, // the test calls maybeReclaim itself
		freeSpace:     disk.freeSpace,
		spaceInterval: time.Hour,
		now:           now,
	})
	reclaims := func() int { return rec.count("rewrote the tables") }

	flood(t, b, "login/", 1000, 10*time.Minute) // 3 MB, due in 10 minutes
	b.maybeReclaim()
	if n := reclaims(); n != 0 {
		t.Fatalf("reclaimed %d times before anything expired", n)
	}
	if due := b.ledger.due(now().Add(11 * time.Minute)); due < 3_000_000 {
		t.Fatalf("ledger: %d bytes due in 11 minutes, want the 3 MB written", due)
	}

	offset.Store(int64(11 * time.Minute))
	b.maybeReclaim()
	if n := reclaims(); n != 1 {
		t.Fatalf("%d reclaims once 3 MB had expired, want 1", n)
	}
	b.maybeReclaim()
	if n := reclaims(); n != 1 {
		t.Fatalf("reclaimed again with nothing new expired: %d", n)
	}

	// Without room to rewrite the tables it waits, and says so once.
	flood(t, b, "more/", 1000, time.Minute)
	offset.Store(int64(13 * time.Minute))
	disk.free.Store(b.tableSize()) // less than tables + headroom
	b.maybeReclaim()
	b.maybeReclaim()
	if n := reclaims(); n != 1 {
		t.Fatalf("reclaimed without the space to rewrite the tables")
	}
	if n := rec.count("not enough free space to rewrite"); n != 1 {
		t.Fatalf("the lack of space was logged %d times, want once", n)
	}
	disk.free.Store(1 << 30)
	b.maybeReclaim()
	if n := reclaims(); n != 2 {
		t.Fatalf("%d reclaims once space returned, want 2", n)
	}

	// An hour on, garbage the ledger cannot see (deletes, records from
	// before a restart) is reclaimed too, if the tables are worth it.
	offset.Store(int64(13*time.Minute + reclaimEvery))
	b.maybeReclaim()
	if n := reclaims(); n != 3 {
		t.Fatalf("%d reclaims after an hour, want 3", n)
	}
}

// TestReclaimByItself runs the maintenance loop for real: the flood's
// space comes back without anyone calling anything.
func TestReclaimByItself(t *testing.T) {
	var offset atomic.Int64
	dir := t.TempDir()
	b := openTest(t, dir, BadgerOptions{
		GCInterval: 20 * time.Millisecond,
		now:        func() time.Time { return time.Now().Add(time.Duration(offset.Load())) },
	})
	flood(t, b, "login/", 3000, time.Second)
	poll.Until(t, "the flood to expire", func() bool {
		_, err := b.Get(t.Context(), "login/00002999")
		return errors.Is(err, ErrNotFound)
	})
	// The ledger counts minutes: jump past the flood's.
	offset.Store(int64(2 * time.Minute))
	poll.Until(t, "the tables to shrink", func() bool {
		b.mu.RLock()
		defer b.mu.RUnlock()
		return b.tableSize() < 256<<10
	})
}

func TestExpiryLedger(t *testing.T) {
	l := newExpiryLedger()
	base := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) uint64 { return uint64(base.Add(d).Unix()) }
	l.add(0, 1000) // never expires: not counted
	l.add(at(10*time.Second), 1)
	l.add(at(59*time.Second), 2)
	l.add(at(61*time.Second), 4)
	l.add(at(10*time.Minute), 8)
	tests := []struct {
		now  time.Duration
		want int64
	}{
		{0, 0},
		{59 * time.Second, 0},     // its minute is not over yet
		{60 * time.Second, 1 + 2}, // the first minute is
		{2 * time.Minute, 1 + 2 + 4},
		{11 * time.Minute, 1 + 2 + 4 + 8},
	}
	for _, tt := range tests {
		if got := l.due(base.Add(tt.now)); got != tt.want {
			t.Errorf("due at +%v = %d, want %d", tt.now, got, tt.want)
		}
	}
	l.settle(base.Add(2 * time.Minute))
	if got := l.due(base.Add(11 * time.Minute)); got != 8 {
		t.Errorf("after settling, due = %d, want 8", got)
	}
}

// TestGCSkipsBelowFloor: value log GC rewrites files, so it must not run
// while writes are refused.
func TestGCSkipsBelowFloor(t *testing.T) {
	disk := newFakeDisk(1 << 30)
	rec := new(recorder)
	b := openTest(t, t.TempDir(), BadgerOptions{
		Logger:        slog.New(rec),
		freeSpace:     disk.freeSpace,
		spaceInterval: time.Hour,
		GCInterval:    time.Hour, // the test calls giveBackSpace itself
	})
	gcRan := func() bool {
		for _, msg := range []string{"No file with discard stats", "less than threshold", "Rewriting fid"} {
			if _, ok := rec.find(msg); ok {
				return true
			}
		}
		return false
	}
	b.giveBackSpace()
	if !gcRan() {
		t.Fatal("value log GC did not run with space to spare")
	}
	rec.mu.Lock()
	rec.records = nil
	rec.mu.Unlock()

	disk.free.Store(0)
	b.space.look()
	b.giveBackSpace()
	if gcRan() {
		t.Fatal("value log GC ran below the floor")
	}
}

func TestReclaimMarkers(t *testing.T) {
	version := "\x00\x00\x00\x00\x00\x00\x00\x07"
	tables := []badger.TableInfo{
		{Left: []byte("login/a" + version), Right: []byte("login/k" + version)},
		{Left: []byte("sess/x" + version), Right: []byte("sess/x" + version)}, // one key
		{Left: []byte(string(reclaimPrefix) + version), Right: []byte("z" + version)},
		{Left: []byte("short"), Right: []byte("short")}, // no version: not Badger's
	}
	got := reclaimMarkers(tables)
	want := [][]byte{lowestKey, highestKey, []byte("login/a\x00")}
	if len(got) != len(want) {
		t.Fatalf("markers %q, want %q", got, want)
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Errorf("marker %d = %q, want %q", i, got[i], want[i])
		}
	}
	// The markers sort around every UTF-8 key.
	for _, k := range []string{"a", "login/zzz", "sess/\u4e2d\u6587", "\u007f", "\U0010ffff"} {
		if bytes.Compare(lowestKey, []byte(k)) >= 0 || bytes.Compare(highestKey, []byte(k)) <= 0 {
			t.Errorf("%q is not between the markers", k)
		}
	}
}

// TestReclaimKeepsKeysLikeMarkers: a marker that happens to be a real key
// is not deleted.
func TestReclaimKeepsKeysLikeMarkers(t *testing.T) {
	b := openTest(t, t.TempDir(), BadgerOptions{GCInterval: time.Hour})
	mustPut(t, b, "login/a", "1", 0)
	mustPut(t, b, "login/a\x00", "2", 0)
	mustPut(t, b, "login/b", "3", 0)
	for range 2 { // the first flushes them into a table, the second marks it
		if err := b.reclaim(); err != nil {
			t.Fatal(err)
		}
	}
	if len(reclaimMarkers(b.db.Tables())) < 3 {
		t.Fatal("no table to mark: the test proves nothing")
	}
	for k, want := range map[string]string{"login/a": "1", "login/a\x00": "2", "login/b": "3"} {
		if got := mustGet(t, b, k); string(got) != want {
			t.Errorf("Get(%q) after reclaim = %q, want %q", k, got, want)
		}
	}
}
