// Package kv is the appliance's storage: a narrow key-value interface with
// expiry, its embedded Badger implementation, and a Redis one for several
// instances sharing state.
//
// The interface is deliberately small (no iteration, no transactions) so that
// both implementations give exactly the same guarantees; the conformance
// suite in kv/kvtest runs on each.
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

// ErrNoSpace is returned by writes while the store's disk is below its
// free-space floor. Reads keep working; writes resume by themselves when
// space returns.
var ErrNoSpace = errors.New("kv: storage is full")

// ErrUnavailable wraps failures to reach a networked store (Redis down,
// slow or refusing): the request may succeed later, unchanged.
var ErrUnavailable = errors.New("kv: storage unavailable")

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
	// CompareAndSwap sets key to value, with ttl, only when its current
	// value is exactly old, and reports whether it did. A missing or expired
	// key matches no old value (PutIfAbsent covers that case). Of concurrent
	// callers swapping the same old value, exactly one gets true.
	CompareAndSwap(ctx context.Context, key string, old, value []byte, ttl time.Duration) (bool, error)
	// CompareAndDelete deletes key only when its current value is exactly
	// old, and reports whether it did: how a lease is released by its owner
	// and nobody else.
	CompareAndDelete(ctx context.Context, key string, old []byte) (bool, error)
}

// Bus carries short notices between the holders of one store: in one
// process for Badger, across instances through Redis pub/sub. Delivery is
// best effort (a subscriber that is not listening at the moment misses the
// notice), so it is for "look again" hints, never for data.
type Bus interface {
	// Publish sends msg to the channel's current subscribers.
	Publish(ctx context.Context, channel string, msg []byte) error
	// Subscribe returns the notices published on channel from now on,
	// until ctx ends, when the channel is closed. A subscriber that falls
	// behind loses notices rather than blocking publishers.
	Subscribe(ctx context.Context, channel string) (<-chan []byte, error)
}
