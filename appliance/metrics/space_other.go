//go:build !linux

package metrics

import "errors"

// DiskSpace is known on Linux only.
func DiskSpace(dir string) (free, total int64, err error) {
	return 0, 0, errors.New("free space is known on Linux only")
}
