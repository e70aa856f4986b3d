package metrics

import (
	"io/fs"
	"path/filepath"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// Sizer is a store that can say how much disk it takes: for Badger, its
// LSM tree and its value log.
type Sizer interface {
	Size() (lsm, vlog int64)
}

// WatchStorage adds, computed at scrape time,
// wxappliance_storage_size_bytes{part="lsm"|"vlog"} when store is a Sizer
// (no series otherwise) and wxappliance_storage_free_bytes when dir is not
// empty and its file system can be asked (Linux).
func (m *Metrics) WatchStorage(store any, dir string) {
	if s, ok := store.(Sizer); ok {
		for _, part := range []string{"lsm", "vlog"} {
			m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Namespace: namespace, Name: "storage_size_bytes",
				Help:        "Bytes the store takes on disk: Badger's LSM tree and value log.",
				ConstLabels: prometheus.Labels{"part": part},
			}, func() float64 {
				lsm, vlog := s.Size()
				if part == "lsm" {
					return float64(lsm)
				}
				return float64(vlog)
			}))
		}
	}
	if dir == "" {
		return
	}
	if _, _, err := DiskSpace(dir); err != nil {
		return
	}
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: namespace, Name: "storage_free_bytes",
		Help: "Bytes free for the appliance on the file system of storage.dir.",
	}, func() float64 {
		free, _, _ := DiskSpace(dir)
		return float64(free)
	}))
}

// DirSizer sizes a Badger directory from its files, for a store that does
// not say itself: tables (.sst) are the LSM tree, .vlog files the value log.
type DirSizer string

// Size walks the directory; files it cannot read count as nothing.
func (d DirSizer) Size() (lsm, vlog int64) {
	filepath.WalkDir(string(d), func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return nil
		}
		info, err := e.Info()
		if err != nil {
			return nil
		}
		switch {
		case strings.HasSuffix(path, ".sst"):
			lsm += info.Size()
		case strings.HasSuffix(path, ".vlog"):
			vlog += info.Size()
		}
		return nil
	})
	return lsm, vlog
}
