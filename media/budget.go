package media

import (
	"context"
	"fmt"
	"sync"
)

// Budget bounds the bytes of media held in memory at once by everyone who
// shares it, such as every RPC connection's media.get. Callers take room
// before they buffer a file and give it back once the bytes are gone.
//
// Waiters are served in arrival order: a large file first in line is not
// overtaken forever by a stream of small ones.
type Budget struct {
	size int64

	mu      sync.Mutex
	used    int64
	waiters []*waiter
}

type waiter struct {
	n     int64
	ready chan struct{} // closed once the room is taken for this waiter
}

// NewBudget returns a Budget of size bytes; size must be positive.
func NewBudget(size int64) *Budget {
	if size <= 0 {
		panic("media: budget size must be positive")
	}
	return &Budget{size: size}
}

// Size is the whole budget in bytes.
func (b *Budget) Size() int64 { return b.size }

// Used is the room taken and not yet released, in bytes.
func (b *Budget) Used() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// Waiting is how many callers wait for room.
func (b *Budget) Waiting() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.waiters)
}

// Acquire takes room for n bytes, waiting in line until it is free or ctx
// ends, and returns the bytes taken, which the caller gives back with
// Release. A request for more than the whole budget takes the whole budget:
// such a file (still under media.max_bytes) is held alone rather than
// refused, so raising max_bytes never needs the budget raised with it.
func (b *Budget) Acquire(ctx context.Context, n int64) (int64, error) {
	n = min(max(n, 0), b.size)
	b.mu.Lock()
	if len(b.waiters) == 0 && b.used+n <= b.size {
		b.used += n
		b.mu.Unlock()
		return n, nil
	}
	w := &waiter{n: n, ready: make(chan struct{})}
	b.waiters = append(b.waiters, w)
	b.mu.Unlock()

	select {
	case <-w.ready:
		return n, nil
	case <-ctx.Done():
	}
	b.mu.Lock()
	select {
	case <-w.ready:
		// Granted while ctx ended: give it back, the caller gives up.
		b.used -= n
	default:
		for i, o := range b.waiters {
			if o == w {
				b.waiters = append(b.waiters[:i], b.waiters[i+1:]...)
				break
			}
		}
	}
	// Leaving the head of the line, or giving room back, may let the next
	// waiters in.
	b.grant()
	b.mu.Unlock()
	return 0, fmt.Errorf("media: no room in the media budget of %d bytes for %d more: %w", b.size, n, context.Cause(ctx))
}

// Release gives back n bytes taken with Acquire; a part of them may be
// given back early.
func (b *Budget) Release(n int64) {
	if n <= 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.used -= n
	if b.used < 0 {
		panic("media: budget released more than it was given")
	}
	b.grant()
}

// grant hands room to the waiters at the head of the line while it lasts.
func (b *Budget) grant() {
	for len(b.waiters) > 0 {
		w := b.waiters[0]
		if b.used+w.n > b.size {
			return
		}
		b.used += w.n
		close(w.ready)
		b.waiters[0] = nil
		b.waiters = b.waiters[1:]
	}
}
