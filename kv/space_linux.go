package kv

import (
	"os"
	"syscall"
)

// diskFree returns the bytes an unprivileged process can still allocate on
// the filesystem holding dir. Blocks reserved for root are left out: the
// floor is about what the store can count on.
func diskFree(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * st.Bsize, nil
}

// allocated returns the bytes a file occupies on disk, which for Badger's
// sparse memory-mapped files is far less than their size.
func allocated(info os.FileInfo) int64 {
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		return st.Blocks * 512
	}
	return info.Size()
}
