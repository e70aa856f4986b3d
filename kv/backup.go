package kv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Backup writes a full backup of the store to w while it stays in use. The
// format is Badger's own and is read back by Restore. Close waits for a
// running Backup, so cancel ctx to abandon one on shutdown.
func (b *Badger) Backup(ctx context.Context, w io.Writer) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.db == nil {
		return ErrClosed
	}
	if _, err := b.db.Backup(ctxWriter{ctx, w}, 0); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("kv: backup %q: %w", b.dir, err)
	}
	return nil
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
// used nonces. On failure dir is emptied again, so that a half-restored store
// cannot be started by mistake and the restore can simply be retried.
func Restore(dir string, r io.Reader, opts BadgerOptions) (err error) {
	if opts.InMemory {
		return errors.New("kv: restore: cannot restore into an in-memory store")
	}
	if err := checkEmpty(dir); err != nil {
		return err
	}
	b, err := openBadger(dir, opts, false)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := b.Close(); err == nil && cerr != nil {
			err = cerr
		}
		if err != nil {
			if rerr := emptyDir(dir); rerr != nil {
				err = fmt.Errorf("%w (and cleaning up failed: %v)", err, rerr)
			}
		}
	}()
	// 256 pending writes bounds memory while loading; Load must not run
	// alongside other transactions, which holds as nobody else has b.
	if err := b.db.Load(r, 256); err != nil {
		return fmt.Errorf("kv: restore into storage.dir %q: %w", dir, err)
	}
	return nil
}

func checkEmpty(dir string) error {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("kv: restore: storage.dir %q: %w", dir, err)
	case len(entries) > 0:
		return fmt.Errorf("kv: restore: storage.dir %q is not empty; restore needs an empty or missing directory", dir)
	}
	return nil
}

// emptyDir removes what a failed restore left in dir, but not dir itself,
// which may be a mount point.
func emptyDir(dir string) error {
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
