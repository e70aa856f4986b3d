package kv

import (
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
)

// DefaultMinFree is the free-space floor of a Badger store when
// BadgerOptions.MinFree is zero (storage.min_free).
//
// The floor is the room Badger still needs once the store has stopped
// accepting writes, because Badger goes on writing by itself and dies of
// SIGBUS, not an error, when a write into one of its memory-mapped files
// finds the disk full (see Badger). With the options of badgerOptions, what
// it can still add by then is:
//
//   - up to checkEvery (1 MiB) admitted between two looks at the disk;
//   - the flush of both memtables to level 0: about 4.1 MiB each, plus a
//     4 KiB header page for the next write-ahead log;
//   - the compaction such a flush sets off, which writes its output before
//     it deletes its input: level 0 (2 tables of 4 MiB normally, 8 when
//     writes were stalling) merged with the base level, whose target is
//     10 MiB.
//
// That is 1 + 8 + 8 + 10 = 27 MiB normally and 1 + 8 + 32 + 10 = 51 MiB in
// the worst case; 64 MiB covers it with room for the manifest, the logs
// of other programs for a few seconds, and a store somewhat over its
// nominal size, and is a negligible share of any real disk. A store that
// has grown to hundreds of MiB compacts bigger tables at its lower levels
// and deserves a larger floor.
const DefaultMinFree = 64 << 20

const (
	// checkEvery bounds how much a flood can write between two looks at
	// the disk: each writer adds its bytes to a counter, and the one that
	// crosses checkEvery looks at once instead of waiting for the next tick.
	checkEvery = 1 << 20
	// writeOverhead is what an entry costs in the write-ahead log beyond
	// its key and value: header, checksum, and its share of the
	// transaction's commit marker.
	writeOverhead = 64
	// unknownWriteSize is counted for a transaction whose size the store
	// cannot see (CompareAndSwap's value goes through update unseen); it is
	// more than any token or lease the appliance swaps.
	unknownWriteSize = 4 << 10
)

// noSpaceError reports the disk below the floor. It is what Ready returns,
// and writes wrap it, so that errors.Is(err, ErrNoSpace) holds for both and
// the text says how far below the floor the disk is.
type noSpaceError struct {
	free, min int64
}

func (e *noSpaceError) Error() string {
	return fmt.Sprintf("disk full: %s free (storage.min_free is %s)", formatBytes(e.free), formatBytes(e.min))
}

func (e *noSpaceError) Unwrap() error { return ErrNoSpace }

// formatBytes writes n in MiB, or in KiB below one MiB, rounded down: the
// precision an operator needs to see how full a disk is.
func formatBytes(n int64) string {
	if n < 1<<20 {
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d MiB", n>>20)
}

// spaceGuard refuses writes while the disk holding the store has less free
// space than the floor. The hot path is two atomic operations; the disk is
// looked at by the store's maintenance loop every second and by the writer
// that takes the bytes written since the last look past checkEvery.
type spaceGuard struct {
	dir    string
	min    int64 // below this many free bytes, writes are refused
	resume int64 // at or above this many, they are accepted again
	free   func(dir string) (int64, error)
	log    *slog.Logger

	written atomic.Int64                 // bytes admitted since the last look
	full    atomic.Pointer[noSpaceError] // nil while writes are accepted

	mu           sync.Mutex // serialises looks, so each transition is logged once
	statfsFailed bool       // a failure to look was logged, not yet the recovery
}

func newSpaceGuard(dir string, min int64, free func(string) (int64, error), log *slog.Logger) *spaceGuard {
	return &spaceGuard{
		dir: dir,
		min: min,
		// Writes resume a sixteenth of the floor above it, so that a
		// compaction freeing a few MiB right at the floor does not flip
		// the store between full and not full.
		resume: min + min/16,
		free:   free,
		log:    log,
	}
}

// admit lets a write of about n bytes through, or returns the error that
// refuses it.
func (g *spaceGuard) admit(n int64) error {
	if e := g.full.Load(); e != nil {
		return e
	}
	if g.written.Add(n) >= checkEvery && g.mu.TryLock() {
		// Other writers go on meanwhile; at most the writes already past
		// this point can still land before the look's verdict.
		g.lookLocked()
		g.mu.Unlock()
		if e := g.full.Load(); e != nil {
			return e
		}
	}
	return nil
}

// err is nil while writes are accepted, else the noSpaceError.
func (g *spaceGuard) err() error {
	if e := g.full.Load(); e != nil {
		return e
	}
	return nil
}

// look checks the free space now and reports whether writes are refused.
func (g *spaceGuard) look() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.lookLocked()
	return g.full.Load() != nil
}

func (g *spaceGuard) lookLocked() {
	g.written.Store(0)
	free, err := g.free(g.dir)
	if err != nil {
		// Not knowing is no reason to stop the appliance: keep the last
		// verdict, and say once that the floor is not being watched.
		if !g.statfsFailed {
			g.statfsFailed = true
			g.log.Error("kv: cannot read the free space of storage.dir; storage.min_free is not enforced", "dir", g.dir, "err", err)
		}
		return
	}
	if g.statfsFailed {
		g.statfsFailed = false
		g.log.Info("kv: free space of storage.dir readable again", "dir", g.dir)
	}
	was := g.full.Load()
	switch {
	case free < g.min:
		g.full.Store(&noSpaceError{free: free, min: g.min})
		if was == nil {
			g.log.Error("kv: disk below storage.min_free; refusing writes until space returns",
				"dir", g.dir, "free", formatBytes(free), "min_free", formatBytes(g.min))
		}
	case was == nil:
	case free >= g.resume:
		g.full.Store(nil)
		// Warn, not Info: whoever saw the error should see the recovery.
		g.log.Warn("kv: disk space back above storage.min_free; accepting writes",
			"dir", g.dir, "free", formatBytes(free), "min_free", formatBytes(g.min))
	default:
		// Between the floor and the resume mark: still refusing, with
		// the figure updated for Ready.
		g.full.Store(&noSpaceError{free: free, min: g.min})
	}
}

// freeNow returns the free space, for decisions that need the figure
// rather than the verdict (opening read-only, reclaiming space).
func (g *spaceGuard) freeNow() (int64, error) {
	return g.free(g.dir)
}
