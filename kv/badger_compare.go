package kv

import (
	"bytes"
	"context"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// CompareAndSwap sets key to value when it currently holds exactly old.
// Racing swaps all read old, but Badger's conflict detection lets only the
// first commit through; the others retry, read the new value and report
// false.
func (b *Badger) CompareAndSwap(ctx context.Context, key string, old, value []byte, ttl time.Duration) (bool, error) {
	if err := checkKey(ctx, key); err != nil {
		return false, err
	}
	if ttl < 0 {
		return false, errNegativeTTL
	}
	var swapped bool
	err := b.update(ctx, func(txn *badger.Txn) error {
		swapped = false
		if match, err := holds(txn, key, old); err != nil || !match {
			return err
		}
		if err := txn.SetEntry(newEntry(key, value, ttl)); err != nil {
			return err
		}
		swapped = true
		return nil
	})
	if err != nil {
		return false, wrap("compare and swap", err)
	}
	return swapped, nil
}

// CompareAndDelete deletes key when it currently holds exactly old.
func (b *Badger) CompareAndDelete(ctx context.Context, key string, old []byte) (bool, error) {
	if err := checkKey(ctx, key); err != nil {
		return false, err
	}
	var deleted bool
	err := b.update(ctx, func(txn *badger.Txn) error {
		deleted = false
		if match, err := holds(txn, key, old); err != nil || !match {
			return err
		}
		if err := txn.Delete([]byte(key)); err != nil {
			return err
		}
		deleted = true
		return nil
	})
	if err != nil {
		return false, wrap("compare and delete", err)
	}
	return deleted, nil
}

// holds reports whether key exists in txn with exactly want as its value.
func holds(txn *badger.Txn, key string, want []byte) (bool, error) {
	item, err := txn.Get([]byte(key))
	switch {
	case err == badger.ErrKeyNotFound:
		return false, nil
	case err != nil:
		return false, err
	}
	match := false
	err = item.Value(func(v []byte) error {
		match = bytes.Equal(v, want)
		return nil
	})
	return match, err
}
