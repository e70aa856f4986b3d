package kv

import (
	"context"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Each calls fn for every live key in the store, in key order, with its
// value and its expiry (the zero time for a key that never expires). It
// reads one consistent snapshot: writes made meanwhile are not seen. fn
// owns value. Iteration stops at the first error from fn, which Each
// returns, or when ctx ends.
//
// Each is not part of Store: the services never iterate, only Migrate
// does.
func (b *Badger) Each(ctx context.Context, fn func(key string, value []byte, expiresAt time.Time) error) error {
	return b.EachPrefix(ctx, "", fn)
}

// EachPrefix is Each for the keys starting with prefix only: Badger seeks
// to them, so the cost is in the keys that match.
func (b *Badger) EachPrefix(ctx context.Context, prefix string, fn func(key string, value []byte, expiresAt time.Time) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.db == nil {
		return ErrClosed
	}
	return b.db.View(func(txn *badger.Txn) error {
		// The iterator skips deleted and expired keys and Badger's
		// internal ones.
		opts := badger.DefaultIteratorOptions
		opts.Prefix = []byte(prefix)
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			item := it.Item()
			value, err := item.ValueCopy(nil)
			if err != nil {
				return wrap("iterate", err)
			}
			var at time.Time
			if secs := item.ExpiresAt(); secs > 0 {
				at = time.Unix(int64(secs), 0)
			}
			if err := fn(string(item.Key()), value, at); err != nil {
				return err
			}
		}
		return nil
	})
}
