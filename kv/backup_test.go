package kv

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// testBackup returns a backup of a store holding a few records, and Badger's
// bare stream of the same store (the format before the header existed).
func testBackup(t testing.TB) (backup, legacy []byte) {
	t.Helper()
	b := openTest(t, t.TempDir(), BadgerOptions{})
	for i, k := range []string{"a", "b", "session"} {
		if err := b.Put(t.Context(), k, bytes.Repeat([]byte{byte('0' + i)}, 100), time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	var out, raw bytes.Buffer
	if err := b.Backup(t.Context(), &out); err != nil {
		t.Fatal(err)
	}
	if _, err := b.db.Backup(&raw, 0); err != nil {
		t.Fatal(err)
	}
	return out.Bytes(), raw.Bytes()
}

func TestBackupFormat(t *testing.T) {
	backup, legacy := testBackup(t)
	if !bytes.HasPrefix(backup, []byte(backupHeader)) {
		t.Fatalf("backup starts %q", backup[:min(len(backup), 30)])
	}
	body := backup[len(backupHeader) : len(backup)-trailerSize]
	if info, err := checkBackup(bytes.NewReader(body)); err != nil || !info.legacy || info.records != 3 {
		t.Fatalf("the frames between header and trailer are not Badger's stream of 3 records: %+v, %v", info, err)
	}
	if info, err := checkBackup(bytes.NewReader(legacy)); err != nil || !info.legacy || info.records != 3 {
		t.Fatalf("Badger's stream: %+v, %v", info, err)
	}
	trailer := backup[len(backup)-trailerSize:]
	if binary.LittleEndian.Uint64(trailer) != trailerMark || binary.LittleEndian.Uint64(trailer[8:]) != uint64(len(body)) {
		t.Fatalf("trailer %x for %d bytes of frames", trailer, len(body))
	}
	info, err := checkBackup(bytes.NewReader(backup))
	if err != nil || info.legacy || info.records != 3 || info.body != int64(len(body)) {
		t.Fatalf("checkBackup = %+v, %v", info, err)
	}
}

// TestRestoreRefusesBadBackups: nothing Restore refuses leaves a trace, in a
// directory that existed (empty) or in one it would have created.
func TestRestoreRefusesBadBackups(t *testing.T) {
	backup, legacy := testBackup(t)
	flipped := bytes.Clone(backup)
	flipped[len(backupHeader)+20] ^= 0x40
	tests := map[string]struct {
		data []byte
		want error
	}{
		"empty":             {nil, errBackupEmpty},
		"text":              {[]byte("this is a shell script\nrm -rf /\n"), errNotBackup},
		"zeros":             {make([]byte, 4096), errNotBackup},
		"png":               {[]byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10"), errNotBackup},
		"small length junk": {[]byte("\x10\x00\x00\x00\x00\x00\x00\x00not a backup at all"), errNotBackup},
		"header only":       {[]byte(backupHeader), errBackupTruncated},
		"flipped bit":       {flipped, errBackupCorrupt},
		"trailing bytes":    {append(bytes.Clone(backup), "extra"...), errBackupCorrupt},
		"legacy cut":        {legacy[:len(legacy)-3], errBackupTruncated},
	}
	// Truncated at every kind of place: in the header, at and inside a
	// frame length, inside a frame, at the end of the frames (where
	// Badger's own stream would look complete), inside the trailer.
	for _, cut := range []int{1, len(backupHeader) - 1, len(backupHeader) + 3, len(backupHeader) + 8,
		len(backupHeader) + 30, len(backup) - trailerSize, len(backup) - trailerSize + 8, len(backup) - 1} {
		tests["cut at "+strconv.Itoa(cut)] = struct {
			data []byte
			want error
		}{backup[:cut], errBackupTruncated}
	}
	words := map[error]string{
		errBackupEmpty:     "backup is empty",
		errNotBackup:       "not a wxappliance backup",
		errBackupTruncated: "backup is truncated",
		errBackupCorrupt:   "backup is corrupt",
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			existing := t.TempDir()
			missing := filepath.Join(t.TempDir(), "data")
			for _, dir := range []string{existing, missing} {
				err := Restore(dir, bytes.NewReader(tt.data), BadgerOptions{})
				if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), words[tt.want]) {
					t.Fatalf("Restore = %v; want %q", err, words[tt.want])
				}
			}
			if entries, err := os.ReadDir(existing); err != nil || len(entries) != 0 {
				t.Errorf("the existing directory holds %d entries (%v)", len(entries), err)
			}
			if _, err := os.Stat(missing); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the missing directory was created: %v", err)
			}
		})
	}
}

func TestRestoreAfterAFailedOne(t *testing.T) {
	backup, _ := testBackup(t)
	dir := filepath.Join(t.TempDir(), "data")
	for _, bad := range [][]byte{[]byte("junk junk junk junk"), backup[:len(backup)/2], nil} {
		if err := Restore(dir, bytes.NewReader(bad), BadgerOptions{}); err == nil {
			t.Fatalf("Restore of %d bad bytes succeeded", len(bad))
		}
	}
	if err := Restore(dir, bytes.NewReader(backup), BadgerOptions{}); err != nil {
		t.Fatalf("Restore of a good backup after failed ones: %v", err)
	}
	b := openTest(t, dir, BadgerOptions{})
	if got := mustGet(t, b, "session"); !bytes.Equal(got, bytes.Repeat([]byte("2"), 100)) {
		t.Fatalf("restored session = %q", got)
	}
}

func TestRestoreLegacyBackup(t *testing.T) {
	_, legacy := testBackup(t)
	dir := t.TempDir()
	// Not an io.Seeker: Restore reads it twice from memory.
	if err := Restore(dir, strings.NewReader(string(legacy)), BadgerOptions{}); err != nil {
		t.Fatalf("Restore of Badger's bare stream: %v", err)
	}
	b := openTest(t, dir, BadgerOptions{})
	if got := mustGet(t, b, "a"); !bytes.Equal(got, bytes.Repeat([]byte("0"), 100)) {
		t.Fatalf("restored a = %q", got)
	}
}

func TestRestoreFromFileOffset(t *testing.T) {
	backup, _ := testBackup(t)
	// Restore reads from where the reader is, and rewinds to there.
	path := filepath.Join(t.TempDir(), "backup")
	if err := os.WriteFile(path, append([]byte("prefix"), backup...), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Seek(int64(len("prefix")), 0); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := Restore(dir, f, BadgerOptions{}); err != nil {
		t.Fatal(err)
	}
	b := openTest(t, dir, BadgerOptions{})
	mustGet(t, b, "b")
}

func TestRestoreNeedsSpace(t *testing.T) {
	backup, _ := testBackup(t)
	dir := filepath.Join(t.TempDir(), "data")
	disk := newFakeDisk(DefaultMinFree + 100)
	err := Restore(dir, bytes.NewReader(backup), BadgerOptions{freeSpace: disk.freeSpace})
	if !errors.Is(err, ErrNoSpace) || !strings.Contains(err.Error(), "storage.min_free") {
		t.Fatalf("Restore onto a full disk = %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Restore onto a full disk created %s: %v", dir, err)
	}
}

// FuzzCheckBackup: checkBackup never panics, and what it accepts Badger
// loads without error.
func FuzzCheckBackup(f *testing.F) {
	backup, legacy := testBackup(f)
	f.Add(backup)
	f.Add(legacy)
	f.Add([]byte{})
	f.Add([]byte(backupHeader))
	f.Add([]byte("\x10\x00\x00\x00\x00\x00\x00\x00not a backup at all"))
	db := openTest(f, "", BadgerOptions{InMemory: true})
	f.Fuzz(func(t *testing.T, data []byte) {
		info, err := checkBackup(bytes.NewReader(data))
		if err != nil {
			return
		}
		frames := data
		if !info.legacy {
			frames = data[len(backupHeader) : int64(len(backupHeader))+info.body]
		}
		if err := load(db, bytes.NewReader(frames)); err != nil {
			t.Fatalf("checkBackup accepted %q (%+v), Load failed: %v", data, info, err)
		}
	})
}
