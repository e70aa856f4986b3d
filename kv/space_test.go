package kv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/100steps/wxappliance/appliance/poll"
)

// fakeDisk is a freeSpace that tests set by hand.
type fakeDisk struct {
	free  atomic.Int64
	looks atomic.Int64
}

func newFakeDisk(free int64) *fakeDisk {
	d := new(fakeDisk)
	d.free.Store(free)
	return d
}

func (d *fakeDisk) freeSpace(string) (int64, error) {
	d.looks.Add(1)
	return d.free.Load(), nil
}

// count returns how many records have a message containing substr.
func (r *recorder) count(substr string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, rec := range r.records {
		if strings.Contains(rec.Message, substr) {
			n++
		}
	}
	return n
}

// writes returns every kind of write the Store has, each on its own key.
func writes(s *Badger) map[string]func(ctx context.Context) error {
	return map[string]func(ctx context.Context) error{
		"Put":    func(ctx context.Context) error { return s.Put(ctx, "put", []byte("new"), 0) },
		"Delete": func(ctx context.Context) error { return s.Delete(ctx, "delete") },
		"Take":   func(ctx context.Context) error { _, err := s.Take(ctx, "take"); return err },
		"PutIfAbsent": func(ctx context.Context) error {
			_, err := s.PutIfAbsent(ctx, "absent", []byte("new"), time.Minute)
			return err
		},
		"CompareAndSwap": func(ctx context.Context) error {
			_, err := s.CompareAndSwap(ctx, "swap", []byte("old"), []byte("new"), 0)
			return err
		},
		"CompareAndDelete": func(ctx context.Context) error {
			_, err := s.CompareAndDelete(ctx, "cad", []byte("old"))
			return err
		},
	}
}

func TestFloorRefusesWritesAndKeepsReads(t *testing.T) {
	disk := newFakeDisk(1 << 30)
	rec := new(recorder)
	b := openTest(t, t.TempDir(), BadgerOptions{
		Logger:        slog.New(rec),
		MinFree:       64 << 20,
		freeSpace:     disk.freeSpace,
		spaceInterval: time.Hour, // the test looks by hand
	})
	ctx := t.Context()
	for _, k := range []string{"put", "delete", "take", "swap", "cad"} {
		mustPut(t, b, k, "old", 0)
	}
	if err := b.Ready(); err != nil {
		t.Fatalf("Ready with 1 GiB free = %v", err)
	}

	disk.free.Store(3 << 20)
	if !b.space.look() {
		t.Fatal("look with 3 MiB free under a 64 MiB floor did not refuse writes")
	}
	const want = "disk full: 3 MiB free (storage.min_free is 64 MiB)"
	for name, write := range writes(b) {
		err := write(ctx)
		if !errors.Is(err, ErrNoSpace) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s below the floor = %v; want ErrNoSpace saying %q", name, err, want)
		}
	}
	// Nothing reached Badger: every key still holds what it held.
	for _, k := range []string{"put", "delete", "take", "swap", "cad"} {
		if got := mustGet(t, b, k); string(got) != "old" {
			t.Errorf("after refused writes %s = %q, want old", k, got)
		}
	}
	if _, err := b.Get(ctx, "absent"); !errors.Is(err, ErrNotFound) {
		t.Errorf("refused PutIfAbsent stored anyway: %v", err)
	}
	if err := b.Ready(); !errors.Is(err, ErrNoSpace) || err.Error() != want {
		t.Errorf("Ready below the floor = %v; want %q", err, want)
	}
	// A backup only reads.
	if err := b.Backup(ctx, io.Discard); err != nil {
		t.Errorf("Backup below the floor = %v", err)
	}

	// Above the floor but under the resume mark (floor + 1/16): still full,
	// with the figure Ready reports updated.
	disk.free.Store(65 << 20)
	if !b.space.look() {
		t.Fatal("writes resumed 1 MiB above the floor; want them to wait for the resume mark")
	}
	if err := b.Ready(); err == nil || !strings.Contains(err.Error(), "65 MiB free") {
		t.Errorf("Ready at 65 MiB = %v", err)
	}
	if n := rec.count("below storage.min_free"); n != 1 {
		t.Errorf("entering the full state logged %d times, want 1", n)
	}

	disk.free.Store(1 << 30)
	if b.space.look() {
		t.Fatal("still refusing writes with 1 GiB free")
	}
	b.space.look()
	for name, write := range writes(b) {
		if err := write(ctx); err != nil && !errors.Is(err, ErrNotFound) {
			t.Errorf("%s after space returned = %v", name, err)
		}
	}
	if got := mustGet(t, b, "put"); string(got) != "new" {
		t.Errorf("Put after space returned stored %q", got)
	}
	if err := b.Ready(); err != nil {
		t.Errorf("Ready after space returned = %v", err)
	}
	if n := rec.count("back above storage.min_free"); n != 1 {
		t.Errorf("leaving the full state logged %d times, want 1", n)
	}
}

// TestFloorChecksAfterBytes: a flood of writes between two ticks cannot go
// more than checkEvery past the moment the disk went below the floor.
func TestFloorChecksAfterBytes(t *testing.T) {
	disk := newFakeDisk(1 << 30)
	b := openTest(t, t.TempDir(), BadgerOptions{
		MinFree:       64 << 20,
		freeSpace:     disk.freeSpace,
		spaceInterval: time.Hour, // only the byte count triggers looks
	})
	ctx := t.Context()
	value := bytes.Repeat([]byte("v"), 3000)
	looks := disk.looks.Load()
	for i := range 2 * checkEvery / len(value) {
		mustPut(t, b, fmt.Sprint("a", i), string(value), time.Minute)
	}
	if got := disk.looks.Load() - looks; got < 1 || got > 3 {
		t.Errorf("2 MiB of writes looked at the disk %d times, want about 2", got)
	}

	disk.free.Store(1 << 20)
	var admitted int
	for i := 0; ; i++ {
		err := b.Put(ctx, fmt.Sprint("b", i), value, time.Minute)
		if errors.Is(err, ErrNoSpace) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		admitted += len(value) + writeOverhead
		if admitted > 4*checkEvery {
			t.Fatalf("%d bytes written after the disk went below the floor", admitted)
		}
	}
	if admitted > checkEvery {
		t.Errorf("%d bytes admitted below the floor; the bound is checkEvery (%d)", admitted, checkEvery)
	}
}

// TestFloorResumesByItself: nothing but the store's own looks notices the
// disk filling and emptying again.
func TestFloorResumesByItself(t *testing.T) {
	disk := newFakeDisk(1 << 30)
	b := openTest(t, t.TempDir(), BadgerOptions{
		MinFree:       64 << 20,
		freeSpace:     disk.freeSpace,
		spaceInterval: 5 * time.Millisecond,
	})
	disk.free.Store(0)
	poll.Until(t, "Ready to report the disk full", func() bool { return errors.Is(b.Ready(), ErrNoSpace) })
	if err := b.Put(t.Context(), "k", []byte("v"), 0); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Put on a full disk = %v", err)
	}
	disk.free.Store(1 << 30)
	poll.Until(t, "Ready to recover", func() bool { return b.Ready() == nil })
	mustPut(t, b, "k", "v", 0)
}

func TestOpenReadOnlyOnFullDisk(t *testing.T) {
	dir := t.TempDir()
	b, err := OpenBadger(dir, BadgerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, b, "session", "alice", time.Hour)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, dir)

	disk := newFakeDisk(3 << 20)
	rec := new(recorder)
	b = openTest(t, dir, BadgerOptions{
		Logger:        slog.New(rec),
		MinFree:       64 << 20,
		freeSpace:     disk.freeSpace,
		spaceInterval: 5 * time.Millisecond,
	})
	if !b.readOnly {
		t.Fatal("opened read-write on a full disk")
	}
	if got := mustGet(t, b, "session"); string(got) != "alice" {
		t.Fatalf("read-only Get = %q", got)
	}
	if err := b.Ready(); !errors.Is(err, ErrNoSpace) || !strings.HasPrefix(err.Error(), "disk full: 3 MiB free") {
		t.Fatalf("Ready read-only = %v", err)
	}
	for name, write := range writes(b) {
		if err := write(t.Context()); !errors.Is(err, ErrNoSpace) {
			t.Errorf("%s read-only = %v, want ErrNoSpace", name, err)
		}
	}
	var backup bytes.Buffer
	if err := b.Backup(t.Context(), &backup); err != nil {
		t.Errorf("Backup read-only = %v", err)
	}
	// Read-only, Badger wrote nothing at all.
	if after := snapshot(t, dir); after != before {
		t.Errorf("the directory changed while read-only:\nbefore %s\nafter  %s", before, after)
	}

	disk.free.Store(1 << 30)
	poll.Until(t, "the store to reopen for writes", func() bool { return b.Ready() == nil })
	mustPut(t, b, "after", "1", 0)
	if got := mustGet(t, b, "session"); string(got) != "alice" {
		t.Fatalf("Get after reopening = %q", got)
	}
	if _, ok := rec.find("reopened for writes"); !ok {
		t.Error("the reopen was not logged")
	}
}

// snapshot describes the files of dir: names, sizes and contents' length,
// enough to see that nothing was written.
func snapshot(t *testing.T, dir string) string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&sb, "%s:%d:%x ", e.Name(), len(data), crc(data))
	}
	return sb.String()
}

func crc(p []byte) uint32 {
	var h uint32
	for _, c := range p {
		h = h*31 + uint32(c)
	}
	return h
}

// crashImage copies dir while the store is open on it, which is what the
// directory looks like after kill -9: write-ahead logs not yet flushed.
// Holes stay holes, as in the real files.
func crashImage(t *testing.T, dir string) string {
	t.Helper()
	dst := t.TempDir()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		f, err := os.Create(filepath.Join(dst, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		const page = 4096
		for off := 0; off < len(data); off += page {
			chunk := data[off:min(off+page, len(data))]
			if bytes.Count(chunk, []byte{0}) == len(chunk) {
				continue
			}
			if _, err := f.WriteAt(chunk, int64(off)); err != nil {
				t.Fatal(err)
			}
		}
		if err := f.Truncate(int64(len(data))); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	return dst
}

func TestOpenAfterCrashOnFullDisk(t *testing.T) {
	src := openTest(t, t.TempDir(), BadgerOptions{})
	mustPut(t, src, "session", "alice", time.Hour)
	crashed := crashImage(t, src.dir)
	if logs, _, _ := filesIn(crashed); logs == 0 {
		t.Fatal("the crash image has no write-ahead log to replay")
	}

	t.Run("room to replay", func(t *testing.T) {
		dir := crashImage(t, crashed)
		disk := newFakeDisk(3 << 20) // below the floor, above what replay needs
		b := openTest(t, dir, BadgerOptions{MinFree: 64 << 20, freeSpace: disk.freeSpace})
		if got := mustGet(t, b, "session"); string(got) != "alice" {
			t.Fatalf("Get after replay = %q", got)
		}
		if err := b.Put(t.Context(), "k", []byte("v"), 0); !errors.Is(err, ErrNoSpace) {
			t.Fatalf("Put below the floor after replay = %v", err)
		}
	})
	t.Run("no room to replay", func(t *testing.T) {
		dir := crashImage(t, crashed)
		disk := newFakeDisk(64 << 10)
		b, err := OpenBadger(dir, BadgerOptions{MinFree: 64 << 20, freeSpace: disk.freeSpace})
		if err == nil {
			b.Close()
			t.Fatal("opened with 64 KiB free and a write-ahead log to replay")
		}
		if !errors.Is(err, ErrNoSpace) || !strings.Contains(err.Error(), "disk full: 64 KiB free") ||
			!strings.Contains(err.Error(), "unclean shutdown") || !strings.Contains(err.Error(), dir) {
			t.Fatalf("err = %v; want ErrNoSpace naming the dir, the free space and why", err)
		}
	})
}

func TestFloorOff(t *testing.T) {
	disk := newFakeDisk(0)
	b := openTest(t, t.TempDir(), BadgerOptions{MinFree: -1, freeSpace: disk.freeSpace})
	mustPut(t, b, "k", "v", 0)
	if err := b.Ready(); err != nil {
		t.Fatalf("Ready with the floor off = %v", err)
	}
	if n := disk.looks.Load(); n != 0 {
		t.Fatalf("looked at the disk %d times with the floor off", n)
	}
}

func TestFreeSpaceUnreadable(t *testing.T) {
	rec := new(recorder)
	b := openTest(t, t.TempDir(), BadgerOptions{
		Logger:        slog.New(rec),
		freeSpace:     func(string) (int64, error) { return 0, errors.New("statfs: no") },
		spaceInterval: time.Hour,
	})
	b.space.look()
	b.space.look()
	mustPut(t, b, "k", "v", 0)
	if n := rec.count("cannot read the free space"); n != 1 {
		t.Fatalf("an unreadable free space was logged %d times, want once", n)
	}
}

func TestDiskFree(t *testing.T) {
	free, err := diskFree(t.TempDir())
	if err != nil {
		t.Skipf("diskFree: %v", err)
	}
	if free <= 0 {
		t.Fatalf("diskFree = %d", free)
	}
}

func TestFormatBytes(t *testing.T) {
	for n, want := range map[int64]string{
		0:              "0 KiB",
		64 << 10:       "64 KiB",
		1<<20 - 1:      "1023 KiB",
		3 << 20:        "3 MiB",
		3<<20 + 1<<19:  "3 MiB",
		DefaultMinFree: "64 MiB",
		5 << 30:        "5120 MiB",
	} {
		if got := formatBytes(n); got != want {
			t.Errorf("formatBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestOpenNewStoreOnFullDisk(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	disk := newFakeDisk(1 << 20)
	b, err := OpenBadger(dir, BadgerOptions{freeSpace: disk.freeSpace})
	if err == nil {
		b.Close()
		t.Fatal("created a store on a full disk")
	}
	if !errors.Is(err, ErrNoSpace) || !strings.Contains(err.Error(), "disk full: 1 MiB free") || !strings.Contains(err.Error(), dir) {
		t.Fatalf("err = %v; want ErrNoSpace naming the dir and the free space", err)
	}
}
