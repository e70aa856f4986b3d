package kv

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Journal keeps records that are written once and live a few minutes, for
// one process: the callback's dedupe records, thousands a second under
// load, each read again only when WeChat retries. In Badger every one of
// them would go through the write-ahead log, a memtable, a flush and
// compactions that rewrite it until it expires; here a record is one
// append to a segment file and one entry in an index in memory, and a
// segment file is deleted whole once every record in it has expired.
//
// Records are appended with write(2) before Put returns: like Badger's
// memory-mapped files they survive the process being killed, not a power
// loss. Segments are read back at open, so a restarted process finds the
// records of the one that died. Each segment covers one minute of writes;
// the index costs about 40 bytes of memory per live record.
//
// A later Put of the same key shadows the earlier one. There is no delete:
// records only expire.
type Journal struct {
	dir   string // "" in memory
	admit func(n int64) error
	now   func() time.Time
	log   *slog.Logger

	// mu is held for writing by Put and for reading by Get, which reads
	// record bodies from the segments' files.
	mu     sync.RWMutex
	segs   []*segment // oldest first; the last one takes the writes
	closed bool
}

// JournalOptions configures OpenJournal. The zero value is ready to use.
type JournalOptions struct {
	// Logger receives notices (a damaged segment, a failed deletion). Nil
	// discards them.
	Logger *slog.Logger
	// Admit is asked before each write of about n bytes, and its error
	// refuses the write: the free-space floor of the store the journal
	// sits beside. Nil admits everything.
	Admit func(n int64) error
	// InMemory keeps the records in memory and ignores dir, for tests and
	// in-memory stores: nothing survives the process.
	InMemory bool

	// now replaces time.Now, for tests.
	now func() time.Time
}

// segmentSpan is how long a segment takes writes before the next one
// starts: a segment is deleted a span after its records' TTL at the
// latest, and the index has one map per segment.
const segmentSpan = time.Minute

// maxSegmentBytes starts a new segment early, so that offsets fit the
// index's 32 bits whatever the load.
const maxSegmentBytes = 1 << 30

// Record layout, little-endian:
//
//	uint32 n          bytes after this header
//	uint32 crc        CRC-32C of those n bytes
//	int64  expires    Unix nanoseconds
//	uint16 keyLen
//	key, value
const (
	recordHeader = 8
	recordFixed  = 8 + 2 // expires, keyLen
	maxKeyLen    = 1<<16 - 1
)

// digest is what the index holds of a key; Get checks the key itself in
// the record, so a collision could only hide a record, never return
// another's.
type digest [16]byte

func digestOf(key string) digest {
	sum := sha256.Sum256([]byte(key))
	return digest(sum[:16])
}

// segment is one file of records, or a buffer in memory.
type segment struct {
	start   time.Time
	path    string
	file    *os.File // nil in memory
	mem     []byte   // the records, in memory
	size    int64
	index   map[digest]uint32 // offset of the key's latest record
	expires time.Time         // the latest expiry of its records
	// open is set on the segment this process writes to, until a span
	// has passed or a write failed. Segments read back at open never
	// take writes: whatever a crash left at their end stays behind.
	open bool
}

// OpenJournal opens the journal in dir, creating the directory if needed,
// and reads the segments a previous process left: their live records are
// found again, segments whose records have all expired are deleted, and a
// record damaged by a crash mid-write ends its segment.
func OpenJournal(dir string, opts JournalOptions) (*Journal, error) {
	j := &Journal{admit: opts.Admit, now: opts.now, log: opts.Logger}
	if j.now == nil {
		j.now = time.Now
	}
	if j.log == nil {
		j.log = slog.New(slog.DiscardHandler)
	}
	if opts.InMemory {
		return j, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("kv: journal %q: %w", dir, err)
	}
	j.dir = dir
	names, err := filepath.Glob(filepath.Join(dir, "*.seg"))
	if err != nil {
		return nil, err
	}
	slices.Sort(names) // the names are zero-padded start times
	now := j.now()
	for _, name := range names {
		seg, err := j.replay(name)
		if err != nil {
			j.Close()
			return nil, err
		}
		if seg == nil || !seg.expires.After(now) {
			j.remove(seg, name)
			continue
		}
		j.segs = append(j.segs, seg)
	}
	return j, nil
}

// replay reads a segment file into a read-only segment. A nil segment means
// nothing in it can be used.
func (j *Journal) replay(path string) (*segment, error) {
	nanos, err := strconv.ParseInt(strings.TrimSuffix(filepath.Base(path), ".seg"), 10, 64)
	if err != nil {
		j.log.Warn("kv: journal: ignoring a file that is not a segment", "file", path)
		return nil, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("kv: journal: %w", err)
	}
	seg := &segment{start: time.Unix(0, nanos), path: path, file: f, index: map[digest]uint32{}}
	r := bufio.NewReaderSize(f, 64<<10)
	var hdr [recordHeader]byte
	var body []byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			if err != io.EOF {
				j.log.Warn("kv: journal: segment ends in a partial record, ignoring it", "file", path, "offset", seg.size)
			}
			break
		}
		n := binary.LittleEndian.Uint32(hdr[0:])
		if n < recordFixed || int64(n) > maxSegmentBytes {
			j.log.Warn("kv: journal: damaged record, ignoring the rest of the segment", "file", path, "offset", seg.size)
			break
		}
		body = slices.Grow(body[:0], int(n))[:n]
		if _, err := io.ReadFull(r, body); err != nil {
			j.log.Warn("kv: journal: segment ends in a partial record, ignoring it", "file", path, "offset", seg.size)
			break
		}
		if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(hdr[4:]) {
			j.log.Warn("kv: journal: damaged record, ignoring the rest of the segment", "file", path, "offset", seg.size)
			break
		}
		expires, key, _, ok := parseRecord(body)
		if !ok {
			j.log.Warn("kv: journal: damaged record, ignoring the rest of the segment", "file", path, "offset", seg.size)
			break
		}
		seg.index[digestOf(key)] = uint32(seg.size)
		if expires.After(seg.expires) {
			seg.expires = expires
		}
		seg.size += recordHeader + int64(n)
	}
	return seg, nil
}

// parseRecord splits a record's body (after the header).
func parseRecord(body []byte) (expires time.Time, key string, value []byte, ok bool) {
	if len(body) < recordFixed {
		return time.Time{}, "", nil, false
	}
	expires = time.Unix(0, int64(binary.LittleEndian.Uint64(body[0:])))
	keyLen := int(binary.LittleEndian.Uint16(body[8:]))
	if recordFixed+keyLen > len(body) {
		return time.Time{}, "", nil, false
	}
	return expires, string(body[recordFixed : recordFixed+keyLen]), body[recordFixed+keyLen:], true
}

// remove closes and deletes a segment (or, when seg is nil, the file at
// path).
func (j *Journal) remove(seg *segment, path string) {
	if seg != nil {
		if seg.file != nil {
			seg.file.Close()
		}
		path = seg.path
	}
	if path == "" {
		return
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		j.log.Warn("kv: journal: could not delete an expired segment", "file", path, "err", err)
	}
}

// Put appends key's record, which expires ttl from now, and returns once it
// is written. ttl must be positive.
func (j *Journal) Put(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if err := checkKey(ctx, key); err != nil {
		return err
	}
	switch {
	case ttl <= 0:
		return errors.New("kv: journal: a record needs a positive ttl")
	case len(key) > maxKeyLen:
		return errors.New("kv: journal: key too long")
	}
	n := recordFixed + len(key) + len(value)
	if j.admit != nil {
		if err := j.admit(int64(recordHeader + n)); err != nil {
			return fmt.Errorf("kv: journal: %w", err)
		}
	}
	now := j.now()
	expires := now.Add(ttl)
	rec := make([]byte, recordHeader+n)
	binary.LittleEndian.PutUint32(rec[0:], uint32(n))
	binary.LittleEndian.PutUint64(rec[8:], uint64(expires.UnixNano()))
	binary.LittleEndian.PutUint16(rec[16:], uint16(len(key)))
	copy(rec[18:], key)
	copy(rec[18+len(key):], value)
	binary.LittleEndian.PutUint32(rec[4:], crc32.Checksum(rec[recordHeader:], castagnoli))
	d := digestOf(key)

	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return ErrClosed
	}
	seg, err := j.writable(now, int64(len(rec)))
	if err != nil {
		return err
	}
	off := seg.size
	if seg.file != nil {
		if _, err := seg.file.Write(rec); err != nil {
			// A short write leaves a partial record that replay stops
			// at; the next write must not follow it in this segment.
			seg.open = false
			return fmt.Errorf("kv: journal: %w", err)
		}
	} else {
		seg.mem = append(seg.mem, rec...)
	}
	seg.size += int64(len(rec))
	seg.index[d] = uint32(off)
	if expires.After(seg.expires) {
		seg.expires = expires
	}
	return nil
}

// writable returns the segment that takes a write of n bytes at now,
// starting a new one when the current one is a span old or full, and
// deleting segments whose records have all expired. Call with mu held.
func (j *Journal) writable(now time.Time, n int64) (*segment, error) {
	if len(j.segs) > 0 {
		cur := j.segs[len(j.segs)-1]
		if cur.open && now.Before(cur.start.Add(segmentSpan)) && cur.size+n <= maxSegmentBytes {
			return cur, nil
		}
		cur.open = false
	}
	j.expire(now)
	seg := &segment{start: now, index: map[digest]uint32{}, open: true}
	if j.dir != "" {
		seg.path = filepath.Join(j.dir, fmt.Sprintf("%020d.seg", now.UnixNano()))
		f, err := os.OpenFile(seg.path, os.O_RDWR|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o600)
		if err != nil {
			return nil, fmt.Errorf("kv: journal: %w", err)
		}
		seg.file = f
	}
	j.segs = append(j.segs, seg)
	return seg, nil
}

// expire deletes the segments whose records have all expired. Call with mu
// held.
func (j *Journal) expire(now time.Time) {
	keep := j.segs[:0]
	for _, seg := range j.segs {
		if seg.expires.After(now) {
			keep = append(keep, seg)
			continue
		}
		j.remove(seg, "")
	}
	clear(j.segs[len(keep):])
	j.segs = keep
}

// Get returns a copy of key's latest record, or ErrNotFound when there is
// none or it has expired.
func (j *Journal) Get(ctx context.Context, key string) ([]byte, error) {
	if err := checkKey(ctx, key); err != nil {
		return nil, err
	}
	d := digestOf(key)
	j.mu.RLock()
	defer j.mu.RUnlock()
	if j.closed {
		return nil, ErrClosed
	}
	for i := len(j.segs) - 1; i >= 0; i-- {
		seg := j.segs[i]
		off, ok := seg.index[d]
		if !ok {
			continue
		}
		expires, k, value, err := seg.read(int64(off))
		if err != nil {
			return nil, fmt.Errorf("kv: journal: %w", err)
		}
		if k != key || !expires.After(j.now()) {
			return nil, ErrNotFound
		}
		return value, nil
	}
	return nil, ErrNotFound
}

// read returns the record at off.
func (s *segment) read(off int64) (time.Time, string, []byte, error) {
	var hdr [recordHeader]byte
	if err := s.readAt(hdr[:], off); err != nil {
		return time.Time{}, "", nil, err
	}
	body := make([]byte, binary.LittleEndian.Uint32(hdr[0:]))
	if err := s.readAt(body, off+recordHeader); err != nil {
		return time.Time{}, "", nil, err
	}
	if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(hdr[4:]) {
		return time.Time{}, "", nil, errors.New("damaged record")
	}
	expires, key, value, ok := parseRecord(body)
	if !ok {
		return time.Time{}, "", nil, errors.New("damaged record")
	}
	return expires, key, value, nil
}

func (s *segment) readAt(p []byte, off int64) error {
	if s.file == nil {
		if off+int64(len(p)) > int64(len(s.mem)) {
			return io.ErrUnexpectedEOF
		}
		copy(p, s.mem[off:])
		return nil
	}
	_, err := s.file.ReadAt(p, off)
	return err
}

// Len is the number of records the index holds, live or not yet deleted
// with their segment, for tests and metrics.
func (j *Journal) Len() int {
	j.mu.RLock()
	defer j.mu.RUnlock()
	n := 0
	for _, seg := range j.segs {
		n += len(seg.index)
	}
	return n
}

// Close closes the segment files. The records stay on disk for the next
// process.
func (j *Journal) Close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return nil
	}
	j.closed = true
	var errs []error
	for _, seg := range j.segs {
		if seg.file != nil {
			errs = append(errs, seg.file.Close())
		}
	}
	j.segs = nil
	return errors.Join(errs...)
}

// Journal opens the journal name beside the store: a directory of its own
// inside the store's, under the same directory lock (one process holds
// both) and the same free-space floor, closed with the store. An in-memory
// store has an in-memory journal. Asking again for the same name returns
// the same journal.
func (b *Badger) Journal(name string) (*Journal, error) {
	if name == "" || strings.ContainsAny(name, `/\.`) {
		return nil, fmt.Errorf("kv: journal name %q", name)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.db == nil && b.lost == nil {
		return nil, ErrClosed
	}
	if j, ok := b.journals[name]; ok {
		return j, nil
	}
	j, err := OpenJournal(filepath.Join(b.dir, name), JournalOptions{
		Logger:   b.log,
		Admit:    b.admitJournal,
		InMemory: b.opt.InMemory,
	})
	if err != nil {
		return nil, err
	}
	if b.journals == nil {
		b.journals = map[string]*Journal{}
	}
	b.journals[name] = j
	return j, nil
}

// admitJournal is a journal's free-space floor: the store's.
func (b *Badger) admitJournal(n int64) error {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.writable(n)
}
