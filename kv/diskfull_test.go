package kv

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/100steps/wxappliance/appliance/poll"
)

// mountTmpfs mounts a tmpfs of size bytes on a fresh directory for the
// test. It needs root; without it the test is skipped, unless
// WXAPPLIANCE_REQUIRE_TMPFS=1 (set in CI) makes that a failure.
func mountTmpfs(t *testing.T, size int64) string {
	t.Helper()
	unavailable := t.Skipf
	if os.Getenv("WXAPPLIANCE_REQUIRE_TMPFS") == "1" {
		unavailable = t.Fatalf
	}
	if os.Geteuid() != 0 {
		unavailable("mounting a tmpfs needs root (run as root, or unset WXAPPLIANCE_REQUIRE_TMPFS to skip)")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d", size)); err != nil {
		unavailable("mount tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
			syscall.Unmount(dir, syscall.MNT_DETACH)
		}
	})
	return dir
}

// fillTo writes a filler file on the filesystem of dir so that about free
// bytes remain free.
func fillTo(t *testing.T, dir string, free int64) string {
	t.Helper()
	now, err := diskFree(dir)
	if err != nil {
		t.Fatal(err)
	}
	if now <= free {
		t.Fatalf("only %d bytes free, cannot fill to %d", now, free)
	}
	path := filepath.Join(dir, "filler")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := bytes.Repeat([]byte{1}, 1<<20)
	for left := now - free; left > 0; left -= int64(len(chunk)) {
		if _, err := f.Write(chunk[:min(int64(len(chunk)), left)]); err != nil {
			t.Fatalf("writing the filler: %v", err)
		}
	}
	return path
}

// TestDiskFullOnTmpfs fills a real tmpfs under a store with the default
// floor: Badger must never get to the SIGBUS that would kill this test
// binary, reads go on, and writes come back when space does, with or
// without a reopen.
func TestDiskFullOnTmpfs(t *testing.T) {
	if testing.Short() {
		t.Skip("fills a tmpfs")
	}
	mnt := mountTmpfs(t, 96<<20)
	dir := filepath.Join(mnt, "data")
	opts := BadgerOptions{spaceInterval: 20 * time.Millisecond}
	b, err := OpenBadger(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { b.Close() }()
	mustPut(t, b, "session", "alice", time.Hour)

	// Leave 8 MiB above the floor and flood until the floor holds.
	filler := fillTo(t, mnt, DefaultMinFree+8<<20)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		admitted int
		errs     []error
	)
	value := bytes.Repeat([]byte("s"), 3000)
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				err := b.Put(t.Context(), fmt.Sprintf("login/%d/%d", w, i), value, 10*time.Minute)
				mu.Lock()
				switch {
				case err == nil:
					admitted++
				case !errors.Is(err, ErrNoSpace):
					errs = append(errs, err)
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		t.Errorf("Put during the flood: %v", err)
	}
	free, _ := diskFree(mnt)
	t.Logf("%d writes of 3 KB admitted; %d KiB free with a floor of %d MiB", admitted, free>>10, DefaultMinFree>>20)
	if admitted < 1000 {
		t.Errorf("only %d writes before the floor; 8 MiB should take more", admitted)
	}
	if free < DefaultMinFree/2 {
		t.Errorf("%d KiB free: the store wrote far past its floor", free>>10)
	}
	if got := mustGet(t, b, "session"); string(got) != "alice" {
		t.Fatalf("read below the floor = %q", got)
	}
	if err := b.Ready(); !errors.Is(err, ErrNoSpace) || !strings.HasPrefix(err.Error(), "disk full: ") ||
		!strings.HasSuffix(err.Error(), "free (storage.min_free is 64 MiB)") {
		t.Fatalf("Ready below the floor = %v", err)
	}

	// Space returns: writes resume without a reopen.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, "writes to resume", func() bool { return b.Ready() == nil })
	mustPut(t, b, "after", "1", 0)

	// Full again, and restarted: it opens read-only and serves reads.
	filler = fillTo(t, mnt, DefaultMinFree-8<<20)
	poll.Until(t, "the store to see the disk full", func() bool { return errors.Is(b.Ready(), ErrNoSpace) })
	if err := b.Close(); err != nil {
		t.Fatalf("Close below the floor: %v", err)
	}
	b, err = OpenBadger(dir, opts)
	if err != nil {
		t.Fatalf("open below the floor: %v", err)
	}
	if !b.readOnly {
		t.Error("opened read-write below the floor")
	}
	for k, want := range map[string]string{"session": "alice", "after": "1"} {
		if got := mustGet(t, b, k); string(got) != want {
			t.Errorf("read-only Get(%q) = %q", k, got)
		}
	}
	if err := b.Put(t.Context(), "k", []byte("v"), 0); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Put read-only = %v", err)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, "the store to reopen for writes", func() bool { return b.Ready() == nil })
	mustPut(t, b, "k", "v", 0)
}
