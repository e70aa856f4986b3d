package kv

import (
	"context"
	"fmt"
	"time"
)

// Migrate copies the live records of src into dst with their remaining
// time to live, for moving one instance's Badger directory to the Redis
// that several instances will share. Expired records are skipped; records
// without expiry stay without.
//
// A key that dst already holds is left alone: once instances run on dst
// its records are the current ones (a newer access_token, a session
// already moved), and an old copy must not replace them. This also makes
// running Migrate again harmless. copied counts the records written.
func Migrate(ctx context.Context, src *Badger, dst Store) (copied int, err error) {
	err = src.Each(ctx, func(key string, value []byte, expiresAt time.Time) error {
		var ttl time.Duration
		if !expiresAt.IsZero() {
			// Badger keeps expiry in whole seconds, rounded up when written,
			// so this remaining time is still a lower bound.
			ttl = time.Until(expiresAt)
			if ttl <= 0 {
				return nil
			}
		}
		stored, err := dst.PutIfAbsent(ctx, key, value, ttl)
		if err != nil {
			// Keys stay out of the message: some embed ids that work as
			// credentials.
			return fmt.Errorf("kv: migrate, after %d records: %w", copied, err)
		}
		if stored {
			copied++
		}
		return nil
	})
	return copied, err
}
