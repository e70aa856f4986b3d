// Package kv is the appliance's storage: a narrow key-value interface with
// expiry, and its embedded Badger implementation.
//
// The interface is deliberately small (no iteration, no transactions) so that a
// networked implementation such as Redis can be added for running several
// appliances behind one load balancer.
package kv

import (
	"context"
	"errors"
	"time"
)

// ErrNotFound is returned when a key does not exist or has expired.
var ErrNotFound = errors.New("kv: not found")

// ErrClosed is returned by every method once the store has been closed.
var ErrClosed = errors.New("kv: store is closed")

// Store is what the services need from storage. Values passed in are not
// retained; values returned belong to the caller. A ttl of zero means the key
// never expires; a negative ttl is an error.
type Store interface {
	// Get returns the value of key, or ErrNotFound.
	Get(ctx context.Context, key string) ([]byte, error)
	// Put sets key to value, replacing any previous value and expiry.
	Put(ctx context.Context, key string, value []byte, ttl time.Duration) error
	// Delete removes key; deleting a missing key is not an error.
	Delete(ctx context.Context, key string) error
	// Take returns the value of key and deletes it atomically: of any number of
	// concurrent callers, exactly one gets the value and the others ErrNotFound.
	Take(ctx context.Context, key string) ([]byte, error)
	// PutIfAbsent sets key only when it does not exist (or has expired) and
	// reports whether it did: of concurrent callers, exactly one gets true.
	PutIfAbsent(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error)
}
