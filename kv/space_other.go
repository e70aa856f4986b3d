//go:build !linux

package kv

import (
	"errors"
	"os"
)

// diskFree is only implemented for Linux, where the appliance runs; elsewhere
// the floor is not enforced and the store says so once in the log.
func diskFree(string) (int64, error) {
	return 0, errors.New("free space is not available on this platform")
}

// allocated returns the size of the file: without Linux's block count, a
// sparse file counts in full, which only overestimates.
func allocated(info os.FileInfo) int64 {
	return info.Size()
}
