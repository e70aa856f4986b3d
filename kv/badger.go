package kv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
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
	// errReadOnly refuses writes between space returning and the reopen
	// that follows within a second.
	errReadOnly = fmt.Errorf("storage.dir was opened read-only on a full disk and is being reopened for writes: %w", ErrNoSpace)
)

// maxAttempts bounds the retries of a transaction that lost a conflict. A
// conflict only happens when another caller changed the same key, so a
// retry almost always settles it at once; the bound keeps a pathological hot
// key from spinning forever.
const maxAttempts = 100

// BadgerOptions configures OpenBadger. The zero value is ready to use.
type BadgerOptions struct {
	// Logger receives Badger's own log lines and the store's notices (the
	// disk crossing the floor, space reclaimed). Nil discards them.
	Logger *slog.Logger
	// GCInterval is how often the store looks for space to give back: value
	// log GC, and a rewrite of the tables once enough records have expired
	// (see maybeReclaim). Zero means five minutes.
	GCInterval time.Duration
	// MinFree is the free-space floor in bytes (storage.min_free): while the
	// disk holding the directory has less free space, every write fails with
	// an error wrapping ErrNoSpace, reads keep working and Ready reports the
	// disk full. Zero means DefaultMinFree; a negative value turns the floor
	// off.
	MinFree int64
	// InMemory keeps everything in memory and ignores dir. It exists for
	// tests: nothing survives Close.
	InMemory bool

	// freeSpace replaces the look at the disk, for tests.
	freeSpace func(dir string) (int64, error)
	// now replaces time.Now in the reclaim accounting, for tests.
	now func() time.Time
	// spaceInterval replaces the second between looks at the disk, for tests.
	spaceInterval time.Duration
}

// Badger is a Store on an embedded Badger database in one directory. It is
// safe for concurrent use.
//
// Writes are not synced to disk one by one: they land in memory-mapped files,
// so they survive the process being killed, but a power loss or kernel crash
// can lose the last writes. Everything kept here (sessions, nonces, tokens,
// dedupe keys) is cheap to lose or recreate.
//
// # A full disk
//
// Badger (v4.9.6) writes almost everything through memory-mapped files that
// it sizes with ftruncate, which allocates no blocks: the memtables' write-
// ahead logs (*.mem, 2 x MemTableSize, written entry by entry in
// logFile.writeEntry), the tables of memtable flushes and compactions
// (table.CreateTable copies a built table into a fresh mapping), value log
// files (*.vlog, 2 x ValueLogFileSize) and DISCARD. On a full disk the
// kernel can only answer the page fault of such a write with SIGBUS, which
// kills the process: there is no error to handle. Reproduced on a 20 MiB
// tmpfs with this store's options, 3 KB Puts died after 4,000 to 7,000
// writes, in writeEntry (the Put itself) or in CreateTable (the flusher or a
// compactor, on their own). Restarting died again: Open replays each *.mem
// file through its mapping, and on tmpfs even reading a hole of a mapping
// allocates a page; a disk filesystem gets a little further, until Open
// writes the header of a new *.mem and a new *.vlog into their mappings or
// flushes the replayed memtables. Only MANIFEST, KEYREGISTRY and the LOCK
// pid file are written with write(2) and fail with ENOSPC like any file.
//
// So the store stops writing before Badger has to: below a floor of free
// space (BadgerOptions.MinFree; DefaultMinFree says what it must cover)
// every write is refused with ErrNoSpace before it reaches Badger. No
// memtable then fills, so no flush or compaction is set off, and those
// already under way finish inside the floor. Opening on a disk below the
// floor opens read-only, which writes nothing at all, and the store reopens
// itself read-write once space is back.
type Badger struct {
	dir       string
	log       *slog.Logger
	opt       badger.Options // read-write; the read-only open derives from it
	now       func() time.Time
	gcEvery   time.Duration
	lookEvery time.Duration

	space  *spaceGuard   // nil when the floor is off
	ledger *expiryLedger // bytes written with a TTL, by when they expire

	// mu is held for reading by every operation, and for writing by Close
	// and a reopen: Close waits for operations in flight, and operations
	// after it see db == nil instead of a closed database. wmu keeps
	// writes out of the way of a reclaim without stopping reads.
	mu       sync.RWMutex
	db       *badger.DB
	wmu      sync.RWMutex        // held for reading by writes, for writing by a reclaim
	readOnly bool                // opened read-only because the disk was below the floor
	lost     error               // why db is nil although Close was not called
	journals map[string]*Journal // opened beside the store, closed with it

	// Touched only by the maintenance goroutine.
	nextReopen     time.Time
	lastReclaim    time.Time
	reclaimBlocked bool

	stopOnce sync.Once
	stop     chan struct{} // closed by Close to stop maintain
	done     chan struct{} // closed by maintain when it has returned
}

var _ Store = (*Badger)(nil)

// OpenBadger opens, creating it if needed, the Badger database in dir.
// If another process has dir open the error wraps ErrLocked. On a disk below
// the free-space floor it opens read-only (see Badger).
func OpenBadger(dir string, opts BadgerOptions) (*Badger, error) {
	return openBadger(dir, opts, true)
}

// openBadger is OpenBadger with the maintenance goroutine optional, because
// Restore must not have GC running alongside db.Load.
func openBadger(dir string, opts BadgerOptions, maintain bool) (*Badger, error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if !opts.InMemory {
		if err := checkDir(dir); err != nil {
			return nil, err
		}
	}
	b := &Badger{
		dir:       dir,
		log:       logger,
		opt:       badgerOptions(dir, opts, logger),
		now:       opts.now,
		gcEvery:   opts.GCInterval,
		lookEvery: opts.spaceInterval,
		ledger:    newExpiryLedger(),
	}
	if b.now == nil {
		b.now = time.Now
	}
	if b.gcEvery <= 0 {
		b.gcEvery = 5 * time.Minute
	}
	if b.lookEvery <= 0 {
		b.lookEvery = time.Second
	}
	if !opts.InMemory && opts.MinFree >= 0 {
		floor := opts.MinFree
		if floor == 0 {
			floor = DefaultMinFree
		}
		free := opts.freeSpace
		if free == nil {
			free = diskFree
		}
		b.space = newSpaceGuard(dir, floor, free, logger)
	}
	if err := b.open(); err != nil {
		return nil, err
	}
	b.lastReclaim = b.now()
	if maintain && !opts.InMemory {
		b.stop = make(chan struct{})
		b.done = make(chan struct{})
		go b.maintain()
	}
	return b, nil
}

// open opens the database: read-write normally, read-only when the disk is
// below the floor, so that starting on a full disk writes nothing.
func (b *Badger) open() error {
	if b.space == nil || !b.space.look() {
		db, err := b.openDB(false)
		b.db = db
		return err
	}
	if _, err := os.Stat(filepath.Join(b.dir, badger.ManifestFilename)); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("storage.dir %q: %w; a new store cannot be created there until space returns", b.dir, b.space.err())
	}
	logs, mem, sst := filesIn(b.dir)
	if logs == 0 {
		// Read-only, Badger reads the manifest, the tables and the value
		// log headers, and creates and writes nothing.
		db, err := b.openDB(true)
		if err != nil {
			return err
		}
		b.db, b.readOnly = db, true
		b.log.Warn("kv: storage.dir opened read-only: the disk is below storage.min_free; writes resume once space returns",
			"dir", b.dir, "err", b.space.err())
		return nil
	}
	// Write-ahead logs left by an unclean shutdown: read-only Badger
	// refuses them (ErrTruncateNeeded), and replaying them writes a level-0
	// table per log and whatever compaction then makes of them. Open
	// read-write when that fits in what is free, writes staying refused.
	need := min(2*mem+sst+1<<20, b.space.min)
	if free, err := b.space.freeNow(); err != nil || free < need {
		return fmt.Errorf("storage.dir %q: %w; the write-ahead log of an unclean shutdown must be replayed, which needs about %s free: free some space and start again",
			b.dir, b.space.err(), formatBytes(need))
	}
	db, err := b.openDB(false)
	if err != nil {
		return err
	}
	b.db = db
	b.log.Warn("kv: storage.dir is below storage.min_free; replayed its write-ahead log, writes stay refused until space returns",
		"dir", b.dir, "err", b.space.err())
	return nil
}

// openDB opens Badger, turning its lock failure into ErrLocked.
func (b *Badger) openDB(readOnly bool) (*badger.DB, error) {
	db, err := badger.Open(b.opt.WithReadOnly(readOnly))
	if err != nil {
		// Badger formats its errors with %v, so the flock failure can only
		// be recognised by its text.
		if strings.Contains(err.Error(), "Cannot acquire directory lock") {
			return nil, fmt.Errorf("storage.dir %q: in use by another process (is another wxappliance running?): %w", b.dir, ErrLocked)
		}
		return nil, fmt.Errorf("storage.dir %q: open badger: %w", b.dir, err)
	}
	return db, nil
}

// filesIn returns the number of write-ahead logs (*.mem) in dir, which a
// clean Close leaves none of, the bytes allocated to them (they are sparse)
// and the size of the tables (*.sst).
func filesIn(dir string) (logs int, mem, sst int64) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		info, err := e.Info()
		if err != nil {
			continue
		}
		switch filepath.Ext(e.Name()) {
		case ".mem":
			logs++
			mem += allocated(info)
		case ".sst":
			sst += info.Size()
		}
	}
	return logs, mem, sst
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
	if errors.Is(err, syscall.ENOSPC) {
		// Writable, but full: the store opens read-only then, which
		// needs no room (see Badger).
		return nil
	}
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

// Ready reports whether the store is open and accepting writes, for
// readiness probes. Below the floor it returns the error writes get, whose
// text says how full the disk is.
func (b *Badger) Ready() error {
	b.mu.RLock()
	defer b.mu.RUnlock()
	switch {
	case b.lost != nil:
		return b.lost
	case b.db == nil:
		return ErrClosed
	case b.space != nil && b.space.err() != nil:
		return b.space.err()
	case b.readOnly:
		return errReadOnly
	}
	return nil
}

// Close stops the maintenance goroutine and closes the database, waiting
// for operations in flight. It is safe to call more than once.
func (b *Badger) Close() error {
	// Maintenance must be stopped first, and without mu, which a reopen
	// or reclaim in progress holds: RunValueLogGC on a closing DB races
	// with its shutdown.
	b.stopOnce.Do(func() {
		if b.stop != nil {
			close(b.stop)
			<-b.done
		}
	})
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lost = nil
	var errs []error
	for _, j := range b.journals {
		errs = append(errs, j.Close())
	}
	b.journals = nil
	if b.db == nil {
		return errors.Join(errs...)
	}
	db := b.db
	b.db = nil
	if err := db.Close(); err != nil {
		errs = append(errs, fmt.Errorf("kv: close %q: %w", b.dir, err))
	}
	return errors.Join(errs...)
}

// writable returns nil when a write of about n bytes may go to Badger, or
// the error refusing it. Call it with mu held for reading.
func (b *Badger) writable(n int64) error {
	switch {
	case b.db == nil:
		return ErrClosed
	case b.space == nil:
		return nil
	}
	if err := b.space.admit(n); err != nil {
		return err
	}
	if b.readOnly {
		return errReadOnly
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
	n := int64(len(key)+len(value)) + writeOverhead
	if err := b.writable(n); err != nil {
		return wrap("put", err)
	}
	b.wmu.RLock()
	defer b.wmu.RUnlock()
	// A blind write reads nothing, so it can never conflict.
	e := newEntry(key, value, ttl)
	err := b.db.Update(func(txn *badger.Txn) error {
		return txn.SetEntry(e)
	})
	if err == nil {
		b.ledger.add(e.ExpiresAt, n)
	}
	return wrap("put", err)
}

// Delete removes key. Deleting a missing key is not an error. A delete is a
// write too (a tombstone in the write-ahead log), so it is refused below the
// floor like any other.
func (b *Badger) Delete(ctx context.Context, key string) error {
	if err := checkKey(ctx, key); err != nil {
		return err
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	if err := b.writable(int64(len(key)) + writeOverhead); err != nil {
		return wrap("delete", err)
	}
	b.wmu.RLock()
	defer b.wmu.RUnlock()
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
	err := b.updateSized(ctx, int64(len(key))+writeOverhead, func(txn *badger.Txn) error {
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
	n := int64(len(key)+len(value)) + writeOverhead
	var (
		stored    bool
		expiresAt uint64
	)
	err := b.updateSized(ctx, n, func(txn *badger.Txn) error {
		stored = false
		_, err := txn.Get([]byte(key))
		switch {
		case err == nil:
			return nil
		case !errors.Is(err, badger.ErrKeyNotFound):
			return err
		}
		e := newEntry(key, value, ttl)
		if err := txn.SetEntry(e); err != nil {
			return err
		}
		stored, expiresAt = true, e.ExpiresAt
		return nil
	})
	if err != nil {
		return false, wrap("put if absent", err)
	}
	if stored {
		b.ledger.add(expiresAt, n)
	}
	return stored, nil
}

// update runs fn in a read-write transaction, retrying it while it loses
// conflicts with concurrent transactions on the same keys. It cannot see
// how much fn writes, so it counts unknownWriteSize against the floor.
func (b *Badger) update(ctx context.Context, fn func(*badger.Txn) error) error {
	return b.updateSized(ctx, unknownWriteSize, fn)
}

// updateSized is update for a transaction writing about n bytes.
func (b *Badger) updateSized(ctx context.Context, n int64, fn func(*badger.Txn) error) error {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if err := b.writable(n); err != nil {
		return err
	}
	b.wmu.RLock()
	defer b.wmu.RUnlock()
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
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, ErrClosed):
		return err
	}
	return fmt.Errorf("kv: %s: %w", op, err)
}
