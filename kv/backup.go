package kv

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
)

// A backup file is Badger's own backup stream between a header and a
// trailer of ours:
//
//	"wxappliance backup 1\n"
//	frames, as DB.Backup writes and DB.Load reads them: a uint64
//	    (little-endian) length, then a protobuf KVList of that length
//	trailer: the uint64 0xffffffffffffffff where a frame length would be
//	    (no KVList is that long), the uint64 length of the frames and
//	    their CRC-32C (uint32), all little-endian
//
// The header tells a backup from any other file, the trailer a complete
// backup from a truncated one (Badger's stream alone can end cleanly
// between two frames), and the checksum a damaged one. Restore also reads
// Badger's bare stream, as backups made before the header existed.
const backupHeader = "wxappliance backup 1\n"

const (
	trailerMark = ^uint64(0)
	trailerSize = 8 + 8 + 4
	// maxFrame bounds the length Restore believes before reading a frame
	// into memory: Badger's Stream sends batches of about 16 MiB (100 MB
	// at most), and junk read as a length is usually far larger.
	maxFrame = 256 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// The ways a backup file can be unusable. Restore's error wraps one of them.
var (
	errBackupEmpty     = errors.New("backup is empty")
	errNotBackup       = errors.New("not a wxappliance backup")
	errBackupTruncated = errors.New("backup is truncated")
	errBackupCorrupt   = errors.New("backup is corrupt")
)

// Backup writes a full backup of the store to w while it stays in use,
// in the format described at backupHeader. Close waits for a running Backup,
// so cancel ctx to abandon one on shutdown.
func (b *Badger) Backup(ctx context.Context, w io.Writer) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.db == nil {
		return ErrClosed
	}
	cw := ctxWriter{ctx, w}
	if _, err := io.WriteString(cw, backupHeader); err != nil {
		return b.backupErr(ctx, err)
	}
	body := &countingWriter{w: cw, crc: crc32.New(castagnoli)}
	if _, err := b.db.Backup(body, 0); err != nil {
		return b.backupErr(ctx, err)
	}
	var trailer [trailerSize]byte
	binary.LittleEndian.PutUint64(trailer[0:], trailerMark)
	binary.LittleEndian.PutUint64(trailer[8:], uint64(body.n))
	binary.LittleEndian.PutUint32(trailer[16:], body.crc.Sum32())
	if _, err := cw.Write(trailer[:]); err != nil {
		return b.backupErr(ctx, err)
	}
	return nil
}

func (b *Badger) backupErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("kv: backup %q: %w", b.dir, err)
}

// countingWriter passes writes on, counting and checksumming them.
type countingWriter struct {
	w   io.Writer
	n   int64
	crc hash.Hash32
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	c.crc.Write(p[:n])
	return n, err
}

// ctxWriter fails writes once ctx is done, which is the only way to stop
// db.Backup early: it takes no context.
type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (cw ctxWriter) Write(p []byte) (int, error) {
	if err := cw.ctx.Err(); err != nil {
		return 0, err
	}
	return cw.w.Write(p)
}

// Restore loads a backup written by Backup into dir, which must be empty or
// not exist: merging a backup into live data would resurrect deleted keys and
// used nonces.
//
// The whole backup is read and checked before dir is touched, so that an
// empty, foreign, truncated or damaged file is refused with dir exactly as it
// was; r is read twice, by seeking back when it is an io.Seeker (a file) and
// from memory otherwise. Should loading still fail, dir is emptied again (and
// removed if Restore created it), so that a half-restored store cannot be
// started by mistake and the restore can simply be retried.
func Restore(dir string, r io.Reader, opts BadgerOptions) (err error) {
	if opts.InMemory {
		return errors.New("kv: restore: cannot restore into an in-memory store")
	}
	existed, err := checkEmpty(dir)
	if err != nil {
		return err
	}
	src, rewind, err := rereadable(r)
	if err != nil {
		return fmt.Errorf("kv: restore: reading the backup: %w", err)
	}
	info, err := checkBackup(src)
	if err != nil {
		return fmt.Errorf("kv: restore: %w", err)
	}
	if err := checkRestoreSpace(dir, info.body, opts); err != nil {
		return err
	}
	if err := rewind(); err != nil {
		return fmt.Errorf("kv: restore: reading the backup again: %w", err)
	}
	frames := io.Reader(bufio.NewReader(src))
	if !info.legacy {
		if _, err := io.CopyN(io.Discard, frames, int64(len(backupHeader))); err != nil {
			return fmt.Errorf("kv: restore: reading the backup again: %w", err)
		}
		frames = io.LimitReader(frames, info.body)
	}

	defer func() {
		if err == nil {
			return
		}
		if rerr := emptyDir(dir, existed); rerr != nil {
			err = fmt.Errorf("%w (and cleaning up failed: %v)", err, rerr)
		}
	}()
	b, err := openBadger(dir, opts, false)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := b.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	if b.readOnly {
		return fmt.Errorf("kv: restore into storage.dir %q: %w", dir, b.space.err())
	}
	if err := load(b, frames); err != nil {
		return fmt.Errorf("kv: restore into storage.dir %q: %w", dir, err)
	}
	return nil
}

// load runs db.Load, which nobody else is using. The backup has been
// checked, but Badger's Load panics on some malformed input (a slice out of
// range), so a panic is turned into an error as a last line of defence.
func load(b *Badger, frames io.Reader) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: badger could not load it: %v", errBackupCorrupt, r)
		}
	}()
	// 256 pending writes bounds memory while loading.
	return b.db.Load(frames, 256)
}

// rereadable returns r, and a function that rewinds it to where it is now:
// by seeking if r can, else by keeping what is read in memory.
func rereadable(r io.Reader) (io.Reader, func() error, error) {
	if s, ok := r.(io.ReadSeeker); ok {
		start, err := s.Seek(0, io.SeekCurrent)
		if err == nil {
			return s, func() error {
				_, err := s.Seek(start, io.SeekStart)
				return err
			}, nil
		}
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, nil, err
	}
	br := bytes.NewReader(data)
	return br, func() error {
		_, err := br.Seek(0, io.SeekStart)
		return err
	}, nil
}

// backupInfo describes a backup that checkBackup accepted.
type backupInfo struct {
	legacy  bool  // Badger's bare stream, without header and trailer
	body    int64 // length of the frames
	records int
}

// checkBackup reads the whole backup and checks its header, the framing
// and protobuf encoding of every frame, and the trailer with its length and
// checksum. It reads one frame into memory at a time.
func checkBackup(r io.Reader) (backupInfo, error) {
	br := bufio.NewReader(r)
	head, err := br.Peek(len(backupHeader))
	switch {
	case len(head) == 0 && errors.Is(err, io.EOF):
		return backupInfo{}, errBackupEmpty
	case err != nil && !errors.Is(err, io.EOF):
		return backupInfo{}, err
	case string(head) == backupHeader:
		br.Discard(len(head))
		return checkFrames(br, false)
	case bytes.HasPrefix([]byte(backupHeader), head):
		return backupInfo{}, fmt.Errorf("%w: it ends inside its header", errBackupTruncated)
	}
	info, err := checkFrames(br, true)
	if err != nil && info.records == 0 && !errors.Is(err, errBackupTruncated) && !errors.Is(err, errNotBackup) {
		// Without a header, something that does not even begin like a
		// Badger stream is simply some other file.
		return info, fmt.Errorf("%w: %w", errNotBackup, err)
	}
	return info, err
}

// checkFrames reads frames up to the trailer or, for a legacy stream, to
// the end of the file.
func checkFrames(r io.Reader, legacy bool) (backupInfo, error) {
	info := backupInfo{legacy: legacy}
	crc := crc32.New(castagnoli)
	var (
		lenBuf [8]byte
		frame  []byte
	)
	for {
		n, err := io.ReadFull(r, lenBuf[:])
		switch {
		case n == 0 && errors.Is(err, io.EOF) && legacy:
			if info.records == 0 {
				return info, errors.New("it holds no records")
			}
			return info, nil
		case n == 0 && errors.Is(err, io.EOF):
			return info, fmt.Errorf("%w: it ends after %d records without its trailer", errBackupTruncated, info.records)
		case errors.Is(err, io.ErrUnexpectedEOF):
			return info, fmt.Errorf("%w: it ends inside the length of a frame", errBackupTruncated)
		case err != nil:
			return info, err
		}
		size := binary.LittleEndian.Uint64(lenBuf[:])
		if size == trailerMark && !legacy {
			return info, checkTrailer(r, info, crc.Sum32())
		}
		if size > maxFrame {
			return info, fmt.Errorf("%w: a frame claims %d bytes", corruptOrForeign(legacy), size)
		}
		if uint64(cap(frame)) < size {
			frame = make([]byte, size)
		}
		frame = frame[:size]
		if _, err := io.ReadFull(r, frame); errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return info, fmt.Errorf("%w: it ends inside a frame of %d bytes", errBackupTruncated, size)
		} else if err != nil {
			return info, err
		}
		records, err := checkKVList(frame)
		if err != nil {
			return info, fmt.Errorf("%w: frame %d bytes into the stream: %w", corruptOrForeign(legacy), info.body, err)
		}
		info.records += records
		crc.Write(lenBuf[:])
		crc.Write(frame)
		info.body += int64(len(lenBuf)) + int64(size)
	}
}

func corruptOrForeign(legacy bool) error {
	if legacy {
		return errNotBackup
	}
	return errBackupCorrupt
}

// checkTrailer reads the rest of the trailer after its mark and compares it
// with the frames read, then makes sure nothing follows.
func checkTrailer(r io.Reader, info backupInfo, sum uint32) error {
	var t [trailerSize - 8]byte
	if _, err := io.ReadFull(r, t[:]); errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: it ends inside its trailer", errBackupTruncated)
	} else if err != nil {
		return err
	}
	if body := binary.LittleEndian.Uint64(t[0:]); body != uint64(info.body) {
		return fmt.Errorf("%w: the trailer says %d bytes of records, the file has %d", errBackupCorrupt, body, info.body)
	}
	if want := binary.LittleEndian.Uint32(t[8:]); want != sum {
		return fmt.Errorf("%w: checksum mismatch", errBackupCorrupt)
	}
	if n, _ := io.Copy(io.Discard, r); n > 0 {
		return fmt.Errorf("%w: data follows its trailer (%d bytes)", errBackupCorrupt, n)
	}
	return nil
}

// checkKVList checks that p is a protobuf KVList as Badger writes it (field
// 1: KV messages; field 10: a varint) and returns how many KVs it holds. Each
// KV must be well-formed and have a key.
func checkKVList(p []byte) (int, error) {
	n := 0
	err := eachField(p, func(num uint64, wire int, val []byte) error {
		switch {
		case num == 1 && wire == wireBytes:
			n++
			return checkKV(val)
		case num == 10 && wire == wireVarint:
			return nil
		}
		return fmt.Errorf("unexpected field %d (wire type %d) in a record list", num, wire)
	})
	return n, err
}

func checkKV(p []byte) error {
	hasKey := false
	err := eachField(p, func(num uint64, wire int, val []byte) error {
		switch {
		case num == 1 && wire == wireBytes:
			hasKey = len(val) > 0
		case (num == 2 || num == 3 || num == 6) && wire == wireBytes:
		case (num == 4 || num == 5 || num == 10 || num == 11) && wire == wireVarint:
		default:
			return fmt.Errorf("unexpected field %d (wire type %d) in a record", num, wire)
		}
		return nil
	})
	if err == nil && !hasKey {
		err = errors.New("a record without a key")
	}
	return err
}

// Protobuf wire types used by Badger's messages.
const (
	wireVarint = 0
	wireBytes  = 2
)

// eachField walks the fields of a protobuf message, handing fn each field's
// number, wire type and, for length-delimited fields, its bytes. Only the
// wire types Badger's messages use are accepted.
func eachField(p []byte, fn func(num uint64, wire int, val []byte) error) error {
	for len(p) > 0 {
		tag, n := binary.Uvarint(p)
		if n <= 0 {
			return errors.New("bad field tag")
		}
		p = p[n:]
		num, wire := tag>>3, int(tag&7)
		if num == 0 {
			return errors.New("field number 0")
		}
		var val []byte
		switch wire {
		case wireVarint:
			if _, n = binary.Uvarint(p); n <= 0 {
				return errors.New("bad varint")
			}
			p = p[n:]
		case wireBytes:
			l, n := binary.Uvarint(p)
			if n <= 0 || l > uint64(len(p)-n) {
				return errors.New("bad length")
			}
			val, p = p[n:n+int(l)], p[n+int(l):]
		default:
			return fmt.Errorf("wire type %d", wire)
		}
		if err := fn(num, wire, val); err != nil {
			return err
		}
	}
	return nil
}

// checkRestoreSpace refuses a restore that would take the disk below the
// floor: loading writes each record to a write-ahead log and again to a
// table before compaction merges them, about twice the backup, and Badger's
// Load does not go through the floor that guards the store's writes.
func checkRestoreSpace(dir string, body int64, opts BadgerOptions) error {
	if opts.MinFree < 0 {
		return nil
	}
	floor := opts.MinFree
	if floor == 0 {
		floor = DefaultMinFree
	}
	freeSpace := opts.freeSpace
	if freeSpace == nil {
		freeSpace = diskFree
	}
	// dir may not exist yet: ask the filesystem it will be made on.
	at := dir
	for {
		if _, err := os.Stat(at); err == nil || filepath.Dir(at) == at {
			break
		}
		at = filepath.Dir(at)
	}
	free, err := freeSpace(at)
	if err != nil {
		return nil // the floor is not enforced where free space is unknown
	}
	if need := floor + 2*body; free < need {
		return fmt.Errorf("kv: restore into storage.dir %q: %w: %s free, the backup needs about %s besides storage.min_free (%s)",
			dir, ErrNoSpace, formatBytes(free), formatBytes(2*body), formatBytes(floor))
	}
	return nil
}

// checkEmpty reports whether dir exists, and fails unless it is empty or
// missing.
func checkEmpty(dir string) (existed bool, err error) {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("kv: restore: storage.dir %q: %w", dir, err)
	case len(entries) > 0:
		return true, fmt.Errorf("kv: restore: storage.dir %q is not empty; restore needs an empty or missing directory", dir)
	}
	return true, nil
}

// emptyDir removes what a failed restore left in dir, and dir itself if the
// restore created it; a directory that existed stays, as it may be a mount
// point.
func emptyDir(dir string, existed bool) error {
	if !existed {
		return os.RemoveAll(dir)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		errs = append(errs, os.RemoveAll(filepath.Join(dir, e.Name())))
	}
	return errors.Join(errs...)
}
