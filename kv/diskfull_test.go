package kv

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/100steps/wxappliance/appliance/poll"
	"github.com/100steps/wxappliance/kv/disktest"
)

// TestDiskFullOnTmpfs fills a real tmpfs under a store with the default
// floor: Badger must never get to the SIGBUS that would kill this test
// binary, reads go on, and writes come back when space does, with or
// without a reopen.
func TestDiskFullOnTmpfs(t *testing.T) {
	if testing.Short() {
		t.Skip("fills a tmpfs")
	}
	mnt := disktest.MountTmpfs(t, 96<<20)
	dir := filepath.Join(mnt, "data")
	opts := BadgerOptions{spaceInterval: 20 * time.Millisecond}
	b, err := OpenBadger(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { b.Close() }()
	mustPut(t, b, "session", "alice", time.Hour)

	// Leave 8 MiB above the floor and flood until the floor holds.
	filler := disktest.Fill(t, mnt, DefaultMinFree+8<<20)
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
	filler = disktest.Fill(t, mnt, DefaultMinFree-8<<20)
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
