// Package disktest gives tests a small real filesystem to fill: a tmpfs of
// their own, and a filler file that leaves a chosen number of bytes free.
// It imports nothing of the appliance, so kv's own tests can use it.
package disktest

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// MountTmpfs mounts a tmpfs of size bytes on a fresh directory for the
// test. It needs root; without it the test is skipped, unless
// WXAPPLIANCE_REQUIRE_TMPFS=1 (set in CI) makes that a failure.
func MountTmpfs(t testing.TB, size int64) string {
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

// Fill grows the file dir/filler until about free bytes remain free on
// dir's filesystem, and returns its path.
func Fill(t testing.TB, dir string, free int64) string {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	now := int64(st.Bavail) * st.Bsize
	if now <= free {
		t.Fatalf("only %d bytes free on %s, cannot fill to %d", now, dir, free)
	}
	path := filepath.Join(dir, "filler")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := bytes.Repeat([]byte{1}, 1<<20) // not a hole
	for left := now - free; left > 0; left -= int64(len(chunk)) {
		if _, err := f.Write(chunk[:min(int64(len(chunk)), left)]); err != nil {
			t.Fatalf("writing the filler: %v", err)
		}
	}
	return path
}
