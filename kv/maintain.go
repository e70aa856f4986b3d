package kv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
)

const (
	// reopenBackoff spaces out attempts to reopen a read-only store for
	// writes after one failed.
	reopenBackoff = 30 * time.Second
	// reclaimMin is the least worth rewriting the tables for.
	reclaimMin = 1 << 20
	// reclaimEvery rewrites the tables at least this often while they hold
	// reclaimMin, for garbage the ledger cannot see: records written
	// before a restart, deleted and overwritten ones.
	reclaimEvery = time.Hour
	// reclaimHeadroom is what a reclaim writes besides the tables it
	// rewrites: the flush of both memtables and a new write-ahead log.
	reclaimHeadroom = 2*(4<<20+256<<10) + 1<<20
	// maxMarkedTables keeps the markers of a reclaim well inside one
	// transaction (Badger's batch limit is 15% of MemTableSize).
	maxMarkedTables = 1000
)

// The keys a reclaim writes. Keys starting with 0x00 or 0xff sort before and
// after every UTF-8 key the services use.
var (
	reclaimPrefix = []byte("\x00wxappliance/reclaim")
	lowestKey     = []byte("\x00wxappliance/low")
	highestKey    = []byte("\xff\xffwxappliance/high")
)

// maintain runs until Close. Every lookEvery it looks at the disk, which
// also notices space returning when nothing writes, and reopens a read-only
// store for writes then; every gcEvery it gives space back.
func (b *Badger) maintain() {
	defer close(b.done)
	gc := time.NewTicker(b.gcEvery)
	defer gc.Stop()
	var look <-chan time.Time
	if b.space != nil {
		t := time.NewTicker(b.lookEvery)
		defer t.Stop()
		look = t.C
	}
	for {
		select {
		case <-b.stop:
			return
		case <-look:
			b.safely("watching free space", b.watchSpace)
		case <-gc.C:
			b.safely("giving space back", b.giveBackSpace)
		}
	}
}

// safely runs fn, logging instead of crashing when it panics: a bug in
// maintenance must not take the appliance down, and the next tick tries
// again.
func (b *Badger) safely(what string, fn func()) {
	defer func() {
		if r := recover(); r != nil {
			b.log.Error("kv: panic while "+what, "dir", b.dir, "panic", r)
		}
	}()
	fn()
}

// watchSpace looks at the disk and reopens the store for writes if it was
// opened read-only and space is back.
func (b *Badger) watchSpace() {
	if b.space.look() || !b.readOnly && b.lost == nil || b.now().Before(b.nextReopen) {
		return
	}
	b.reopen()
}

// reopen closes the read-only database and opens it read-write, or
// read-only again if that fails, so that reads go on.
func (b *Badger) reopen() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.db != nil {
		if err := b.db.Close(); err != nil {
			b.log.Warn("kv: closing read-only storage.dir", "dir", b.dir, "err", err)
		}
		b.db = nil
	}
	db, err := b.openDB(false)
	if err == nil {
		b.db, b.readOnly, b.lost = db, false, nil
		b.log.Info("kv: storage.dir reopened for writes", "dir", b.dir)
		return
	}
	b.nextReopen = b.now().Add(reopenBackoff)
	b.log.Error("kv: reopening storage.dir for writes failed; serving reads only", "dir", b.dir, "err", err)
	db, rerr := b.openDB(true)
	if rerr != nil {
		b.lost = fmt.Errorf("kv: storage.dir %q could not be reopened: %w", b.dir, errors.Join(err, rerr))
		b.log.Error("kv: storage.dir could not be reopened at all", "dir", b.dir, "err", rerr)
		return
	}
	b.db, b.readOnly, b.lost = db, true, nil
}

// giveBackSpace runs value log GC and, when worth it, a reclaim. Both write,
// so neither runs on a read-only store; GC does not run below the floor
// either, while a reclaim may when the space it needs is there, since it is
// how a disk filled with expired records comes back.
func (b *Badger) giveBackSpace() {
	// b.db is only replaced by this goroutine, and cleared by Close once
	// it has stopped, so it can be read here without mu.
	if b.readOnly || b.db == nil {
		return
	}
	if b.space == nil || b.space.err() == nil {
		b.runValueLogGC()
	}
	b.maybeReclaim()
}

// runValueLogGC rewrites value log files while there are any worth
// rewriting. Each call to RunValueLogGC rewrites at most one file.
func (b *Badger) runValueLogGC() {
	for {
		select {
		case <-b.stop:
			return
		default:
		}
		err := b.db.RunValueLogGC(0.5)
		switch {
		case err == nil:
			continue
		case errors.Is(err, badger.ErrNoRewrite):
			// Nothing left worth rewriting: the normal way out.
		case errors.Is(err, badger.ErrRejected):
			b.log.Debug("kv: value log GC rejected", "dir", b.dir, "err", err)
		default:
			b.log.Warn("kv: value log GC failed", "dir", b.dir, "err", err)
		}
		return
	}
}

// maybeReclaim rewrites the tables when the records known to have expired
// since the last rewrite are worth it (at least reclaimMin and a quarter of
// the tables), or when the last rewrite is reclaimEvery old. A rewrite
// writes each new table before it deletes the old ones, so it needs up to
// the size of the tables in free space; without it, it waits.
func (b *Badger) maybeReclaim() {
	now := b.now()
	tables := b.tableSize()
	expired := b.ledger.due(now)
	if expired < max(reclaimMin, tables/4) && (now.Sub(b.lastReclaim) < reclaimEvery || tables < reclaimMin) {
		return
	}
	if b.space != nil {
		need := tables + reclaimHeadroom
		if free, err := b.space.freeNow(); err == nil && free < need {
			if !b.reclaimBlocked {
				b.reclaimBlocked = true
				b.log.Warn("kv: not enough free space to rewrite the tables and drop expired records",
					"dir", b.dir, "free", formatBytes(free), "need", formatBytes(need))
			}
			return
		}
	}
	b.reclaimBlocked = false
	start := time.Now()
	if err := b.reclaim(); err != nil {
		b.log.Warn("kv: rewriting the tables to drop expired records failed", "dir", b.dir, "err", err)
		return
	}
	b.ledger.settle(now)
	b.lastReclaim = now
	after := b.tableSize()
	level := slog.LevelInfo
	if tables-after < reclaimMin {
		level = slog.LevelDebug
	}
	b.log.Log(context.Background(), level, "kv: rewrote the tables to drop expired records", "dir", b.dir,
		"before", formatBytes(tables), "after", formatBytes(after), "took", time.Since(start).Round(time.Millisecond))
}

// reclaim rewrites every table, which drops expired and deleted records.
//
// Badger only drops them in compaction, and only compacts a level when it
// outgrows its target or level 0 holds NumLevelZeroTables tables, which
// takes more writes: after a flood of short-lived records nothing compacts
// again, and they stay on disk (measured: 212 MiB of records that had
// expired minutes before stayed, with or without Flatten). Flatten alone
// does nothing once every table is on one level, and Badger has no call
// that flushes the memtable. DropPrefix does flush it, then compacts
// level 0 into the base level, and Flatten then pushes each level into the
// next, rewriting the tables of the lower level that overlap the upper one.
//
// So reclaim writes a key under a prefix of its own and drops the prefix,
// after writing tombstones that make every table overlap what comes down
// from above: one below and one above every key, and one just after the
// smallest key of each table (its key plus a 0 byte, which exists nowhere,
// as the transaction checks). Without them a table of the last level whose
// keys fall between two tables of the level above is never rewritten: in 2
// of 5 runs that left one or two 4 MiB tables of expired records behind.
// The tombstones themselves are dropped on reaching the last level.
//
// DropPrefix refuses concurrent writes (ErrBlockedWrites), so writers wait
// on wmu while it runs, and it holds Badger's memtable lock, which stalls
// reads, while it flushes and compacts level 0 into the base level, whose
// target is 10 MiB: measured 0.2-0.3 s for a store of 60-210 MiB, on two
// busy cores. Flatten runs beside writes and reads.
func (b *Badger) reclaim() error {
	if err := b.flushAndMark(); err != nil {
		return err
	}
	return b.db.Flatten(1)
}

// flushAndMark writes the markers and drops the prefix, with writes held
// back.
func (b *Badger) flushAndMark() error {
	b.wmu.Lock()
	defer b.wmu.Unlock()
	err := b.db.Update(func(txn *badger.Txn) error {
		if err := txn.Set(reclaimPrefix, nil); err != nil {
			return err
		}
		for _, k := range reclaimMarkers(b.db.Tables()) {
			_, err := txn.Get(k)
			switch {
			case errors.Is(err, badger.ErrKeyNotFound):
				if err := txn.Delete(k); err != nil {
					return err
				}
			case err != nil:
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return b.db.DropPrefix(reclaimPrefix)
}

// reclaimMarkers returns the keys reclaim deletes: the lowest and highest
// key, and the successor of the smallest key of each table that holds more
// than one key.
func reclaimMarkers(tables []badger.TableInfo) [][]byte {
	keys := [][]byte{lowestKey, highestKey}
	if len(tables) > maxMarkedTables {
		// Too many to delete in one transaction; the store is then far
		// bigger than this one is meant to be, and gets the ends only.
		return keys
	}
	for _, t := range tables {
		// Table bounds carry Badger's 8-byte version after the key.
		if len(t.Left) <= 8 || len(t.Right) <= 8 {
			continue
		}
		left, right := t.Left[:len(t.Left)-8], t.Right[:len(t.Right)-8]
		if bytes.Equal(left, right) || bytes.HasPrefix(left, reclaimPrefix) {
			continue
		}
		keys = append(keys, append(bytes.Clone(left), 0))
	}
	return keys
}

// tableSize returns the size of all tables on disk.
func (b *Badger) tableSize() int64 {
	var n int64
	for _, l := range b.db.Levels() {
		n += l.Size
	}
	return n
}

// expiryLedger counts the bytes written with a TTL by the minute they
// expire, so that the store knows when enough has expired to be worth a
// reclaim. It forgets on restart; reclaimEvery covers that.
type expiryLedger struct {
	mu       sync.Mutex
	byMinute map[int64]int64
}

func newExpiryLedger() *expiryLedger {
	return &expiryLedger{byMinute: make(map[int64]int64)}
}

// add counts n bytes expiring at expiresAt (Unix seconds; 0 never expires).
func (l *expiryLedger) add(expiresAt uint64, n int64) {
	if expiresAt == 0 {
		return
	}
	l.mu.Lock()
	l.byMinute[int64(expiresAt)/60] += n
	l.mu.Unlock()
}

// due returns the bytes whose whole minute of expiry is over at now.
func (l *expiryLedger) due(now time.Time) int64 {
	current := now.Unix() / 60
	l.mu.Lock()
	defer l.mu.Unlock()
	var n int64
	for m, bytes := range l.byMinute {
		if m < current {
			n += bytes
		}
	}
	return n
}

// settle forgets what was due at now, once a reclaim has dropped it.
func (l *expiryLedger) settle(now time.Time) {
	current := now.Unix() / 60
	l.mu.Lock()
	defer l.mu.Unlock()
	for m := range l.byMinute {
		if m < current {
			delete(l.byMinute, m)
		}
	}
}
