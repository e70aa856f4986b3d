package kv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

// ErrLocked is returned by OpenBadger and Restore when another process (or
// another Badger in this process) has the storage directory open.
var ErrLocked = errors.New("kv: storage directory is locked")

var (
	errEmptyKey    = errors.New("kv: empty key")
	errNegativeTTL = errors.New("kv: negative ttl")
)

// maxAttempts bounds the retries of a transaction that lost a conflict. A
// conflict only happens when another caller changed the same key, so a
// retry almost always settles it at once; the bound keeps a pathological hot
// key from spinning forever.
const maxAttempts = 100

// BadgerOptions configures OpenBadger. The zero value is ready to use.
type BadgerOptions struct {
	// Logger receives Badger's own log lines. Nil discards them.
	Logger *slog.Logger
	// GCInterval is how often the value log is garbage collected. Zero
	// means five minutes.
	GCInterval time.Duration
	// InMemory keeps everything in memory and ignores dir. It exists for
	// tests: nothing survives Close.
	InMemory bool
}

// Badger is a Store on an embedded Badger database in one directory. It is
// safe for concurrent use.
//
// Writes are not synced to disk one by one: they land in memory-mapped files,
// so they survive the process being killed, but a power loss or kernel crash
// can lose the last writes. Everything kept here (sessions, nonces, tokens,
// dedupe keys) is cheap to lose or recreate.
type Badger struct {
	dir string
	log *slog.Logger

	// mu is held for reading by every operation and for writing by Close,
	// so Close waits for operations in flight and operations that come
	// after it see db == nil instead of a closed database.
	mu sync.RWMutex
	db *badger.DB

	stopGC chan struct{} // closed by Close to stop gcLoop
	gcDone chan struct{} // closed by gcLoop when it has returned
}

var _ Store = (*Badger)(nil)

// OpenBadger opens, creating it if needed, the Badger database in dir.
// If another process has dir open the error wraps ErrLocked.
func OpenBadger(dir string, opts BadgerOptions) (*Badger, error) {
	return openBadger(dir, opts, true)
}

// openBadger is OpenBadger with the value log GC loop optional, because
// Restore must not have GC running alongside db.Load.
func openBadger(dir string, opts BadgerOptions, gc bool) (*Badger, error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if !opts.InMemory {
		if err := checkDir(dir); err != nil {
			return nil, err
		}
	}
	db, err := badger.Open(badgerOptions(dir, opts, logger))
	if err != nil {
		// Badger formats its errors with %v, so the flock failure can only
		// be recognised by its text.
		if strings.Contains(err.Error(), "Cannot acquire directory lock") {
			return nil, fmt.Errorf("storage.dir %q: in use by another process (is another wxappliance running?): %w", dir, ErrLocked)
		}
		return nil, fmt.Errorf("storage.dir %q: open badger: %w", dir, err)
	}
	b := &Badger{dir: dir, log: logger, db: db}
	if gc && !opts.InMemory {
		interval := opts.GCInterval
		if interval <= 0 {
			interval = 5 * time.Minute
		}
		b.stopGC = make(chan struct{})
		b.gcDone = make(chan struct{})
		go b.gcLoop(interval)
	}
	return b, nil
}

// checkDir creates dir and proves it writable, so that a misconfigured
// storage.dir fails with the path and the OS error rather than with whichever
// Badger file happened to be created first.
func checkDir(dir string) error {
	if dir == "" {
		return errors.New("storage.dir is empty")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("storage.dir %q: cannot create directory: %w", dir, err)
	}
	f, err := os.CreateTemp(dir, ".writable-*")
	if err != nil {
		return fmt.Errorf("storage.dir %q: directory is not writable: %w", dir, err)
	}
	name := f.Name()
	f.Close()
	if err := os.Remove(name); err != nil {
		return fmt.Errorf("storage.dir %q: directory is not writable: %w", dir, err)
	}
	return nil
}

// badgerOptions sizes Badger for a store of kilobytes to a few megabytes.
// Badger's defaults are for databases of hundreds of gigabytes and cost
// hundreds of megabytes of address space and tens of megabytes of RSS.
func badgerOptions(dir string, o BadgerOptions, logger *slog.Logger) badger.Options {
	opt := badger.DefaultOptions(dir)
	if o.InMemory {
		opt = badger.DefaultOptions("").WithInMemory(true)
	}
	return opt.
		WithLogger(badgerLogger{logger}).
		// The default 64 MiB memtable exists to batch large write loads.
		// Memtables are memory-mapped and count in RSS: under the load
		// run's callback scenario, 4 MiB instead of 8 MiB cut peak RSS by
		// 13-23 MiB for 10-30% fewer messages per second, still far above
		// any account's push rate (BENCHMARKS.md).
		WithMemTableSize(4 << 20).
		// One memtable being written and one being flushed is enough when a
		// flush takes milliseconds; the default 5 only helps under sustained
		// heavy writes.
		WithNumMemtables(2).
		// Each L0 table is searched by every Get and has its index held in
		// memory; with tiny tables compaction is quick, so compact early.
		// The stall leaves headroom for a burst of writes.
		WithNumLevelZeroTables(2).
		WithNumLevelZeroTablesStall(8).
		// Badger refuses exactly 1; the default 4 is for many cores and
		// large levels.
		WithNumCompactors(2).
		// Values are small tokens and session blobs. Keeping everything under
		// 64 KiB in the LSM tree means overwritten and expired values are
		// dropped by compaction instead of waiting for value log GC. It must
		// stay well under 15% of MemTableSize, Badger's batch size limit.
		WithValueThreshold(64 << 10).
		// Value log files are mmapped at twice this size; the default 1 GiB
		// reserves 2 GiB of address space for what is at most a few MB.
		WithValueLogFileSize(16 << 20).
		// Values are small and mostly random tokens that compress poorly;
		// without compression Badger reads blocks straight from the mmapped
		// tables and needs no block cache (the default is 256 MiB).
		WithCompression(options.None).
		WithBlockCacheSize(0).
		// Zero keeps every table index in memory, which for a handful of
		// tables is smaller than any cache would be.
		WithIndexCacheSize(0).
		// Only Backup streams; 8 goroutines is for large databases.
		WithNumGoroutines(2).
		// Syncing each write would cost an fsync per login. The mmapped
		// files survive kill -9; only power loss can drop the last writes.
		WithSyncWrites(false).
		// Take and PutIfAbsent depend on conflict detection; it is the
		// default, but stating it keeps anyone from "optimising" it away.
		WithDetectConflicts(true)
}

// Ready reports whether the store is open, for readiness probes.
func (b *Badger) Ready() error {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.db == nil {
		return ErrClosed
	}
	return nil
}

// Close stops value log GC and closes the database, waiting for operations
// in flight. It is safe to call more than once.
func (b *Badger) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.db == nil {
		return nil
	}
	// GC must be stopped first: RunValueLogGC on a closing DB races with
	// its shutdown.
	if b.stopGC != nil {
		close(b.stopGC)
		<-b.gcDone
	}
	db := b.db
	b.db = nil
	if err := db.Close(); err != nil {
		return fmt.Errorf("kv: close %q: %w", b.dir, err)
	}
	return nil
}

// Get returns a copy of the value of key, or ErrNotFound if it is missing or
// expired.
func (b *Badger) Get(ctx context.Context, key string) ([]byte, error) {
	if err := checkKey(ctx, key); err != nil {
		return nil, err
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.db == nil {
		return nil, ErrClosed
	}
	var val []byte
	err := b.db.View(func(txn *badger.Txn) error {
		var err error
		val, err = get(txn, key)
		return err
	})
	if err != nil {
		return nil, wrap("get", err)
	}
	return val, nil
}

// Put sets key to value. A positive ttl is rounded up to Badger's granularity
// of whole seconds: the key lives at least ttl and less than ttl+1s.
func (b *Badger) Put(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if err := checkKey(ctx, key); err != nil {
		return err
	}
	if ttl < 0 {
		return errNegativeTTL
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.db == nil {
		return ErrClosed
	}
	// A blind write reads nothing, so it can never conflict.
	err := b.db.Update(func(txn *badger.Txn) error {
		return txn.SetEntry(newEntry(key, value, ttl))
	})
	return wrap("put", err)
}

// Delete removes key. Deleting a missing key is not an error.
func (b *Badger) Delete(ctx context.Context, key string) error {
	if err := checkKey(ctx, key); err != nil {
		return err
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.db == nil {
		return ErrClosed
	}
	err := b.db.Update(func(txn *badger.Txn) error {
		return txn.Delete([]byte(key))
	})
	return wrap("delete", err)
}

// Take returns the value of key and deletes it in one transaction. When
// callers race, Badger's conflict detection fails all commits but the first;
// the losers retry, find the key gone, and get ErrNotFound.
func (b *Badger) Take(ctx context.Context, key string) ([]byte, error) {
	if err := checkKey(ctx, key); err != nil {
		return nil, err
	}
	var val []byte
	err := b.update(ctx, func(txn *badger.Txn) error {
		var err error
		val, err = get(txn, key)
		if err != nil {
			return err
		}
		return txn.Delete([]byte(key))
	})
	if err != nil {
		return nil, wrap("take", err)
	}
	return val, nil
}

// PutIfAbsent sets key unless it exists and has not expired. Racing callers
// all read the key as absent, but only the first commit succeeds; the others
// conflict, retry, see the key and report false.
func (b *Badger) PutIfAbsent(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	if err := checkKey(ctx, key); err != nil {
		return false, err
	}
	if ttl < 0 {
		return false, errNegativeTTL
	}
	var stored bool
	err := b.update(ctx, func(txn *badger.Txn) error {
		stored = false
		_, err := txn.Get([]byte(key))
		switch {
		case err == nil:
			return nil
		case !errors.Is(err, badger.ErrKeyNotFound):
			return err
		}
		if err := txn.SetEntry(newEntry(key, value, ttl)); err != nil {
			return err
		}
		stored = true
		return nil
	})
	if err != nil {
		return false, wrap("put if absent", err)
	}
	return stored, nil
}

// update runs fn in a read-write transaction, retrying it while it loses
// conflicts with concurrent transactions on the same keys.
func (b *Badger) update(ctx context.Context, fn func(*badger.Txn) error) error {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.db == nil {
		return ErrClosed
	}
	var err error
	for attempt := range maxAttempts {
		err = b.db.Update(fn)
		if !errors.Is(err, badger.ErrConflict) {
			return err
		}
		// Back off a little, growing, so a crowd of losers does not retry
		// in lockstep.
		backoff := time.Duration(attempt+1) * 50 * time.Microsecond
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
	return fmt.Errorf("gave up after %d conflicting attempts: %w", maxAttempts, err)
}

// get returns a copy of key's value in txn: the slice Badger hands out is
// only valid until the transaction ends.
func get(txn *badger.Txn, key string) ([]byte, error) {
	item, err := txn.Get([]byte(key))
	if err != nil {
		return nil, err
	}
	return item.ValueCopy(nil)
}

// newEntry builds an entry expiring no earlier than ttl from now.
// Badger stores the expiry in whole Unix seconds and its Entry.WithTTL
// truncates, which lets a key vanish up to a second early; rounding the expiry
// instant up instead makes ttl a lower bound.
func newEntry(key string, value []byte, ttl time.Duration) *badger.Entry {
	// No copy of value is needed: db.Update returns only once the write is
	// in the memtable, after which Badger holds no reference to it.
	e := badger.NewEntry([]byte(key), value)
	if ttl > 0 {
		at := time.Now().Add(ttl)
		secs := at.Unix()
		if at.Nanosecond() > 0 {
			secs++
		}
		e.ExpiresAt = uint64(secs)
	}
	return e
}

func checkKey(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if key == "" {
		return errEmptyKey
	}
	return nil
}

// wrap maps Badger's errors onto the Store's and names the operation.
func wrap(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, badger.ErrKeyNotFound):
		return ErrNotFound
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	}
	return fmt.Errorf("kv: %s: %w", op, err)
}

// gcLoop periodically reclaims value log space until Close.
func (b *Badger) gcLoop(interval time.Duration) {
	defer close(b.gcDone)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-b.stopGC:
			return
		case <-t.C:
			b.runGC()
		}
	}
}

// runGC rewrites value log files while there are any worth rewriting. Each
// call to RunValueLogGC rewrites at most one file.
func (b *Badger) runGC() {
	// A bug in GC must not take the whole appliance down with it; the next
	// tick tries again.
	defer func() {
		if r := recover(); r != nil {
			b.log.Error("kv: value log GC panicked", "dir", b.dir, "panic", r)
		}
	}()
	// b.db is only cleared by Close after this goroutine has stopped, so it
	// can be read here without the lock.
	db := b.db
	for {
		select {
		case <-b.stopGC:
			return
		default:
		}
		err := db.RunValueLogGC(0.5)
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
