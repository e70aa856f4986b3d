package appliance

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// lazyDeadline is context.WithDeadline(parent, deadline) that builds the
// real context, with its timer and its registration in the parent, only
// when something needs more than a look at the clock: Done (a select, an
// upstream call) or Value (a child context, Cause).
//
// Every browser route runs under the WeChat deadline, yet most requests
// never wait on anything (a session in memory, a ticket in memory): the
// timer, the cancel context and the parent's child map were a fifth of
// the bytes allocated per request under wrk and 3-4% of the CPU. Err
// answers from the parent and the clock until the real context exists,
// then from it; the answers are the same.
type lazyDeadline struct {
	parent   context.Context
	deadline time.Time
	once     sync.Once
	real     atomic.Pointer[context.Context]
	cancel   context.CancelFunc
}

var _ context.Context = (*lazyDeadline)(nil)

func newLazyDeadline(parent context.Context, timeout time.Duration) *lazyDeadline {
	return &lazyDeadline{parent: parent, deadline: time.Now().Add(timeout)}
}

func (c *lazyDeadline) make() context.Context {
	c.once.Do(func() {
		ctx, cancel := context.WithDeadline(c.parent, c.deadline)
		c.cancel = cancel
		c.real.Store(&ctx)
	})
	return *c.real.Load()
}

func (c *lazyDeadline) Deadline() (time.Time, bool) {
	if d, ok := c.parent.Deadline(); ok && d.Before(c.deadline) {
		return d, true
	}
	return c.deadline, true
}

func (c *lazyDeadline) Done() <-chan struct{} { return c.make().Done() }

func (c *lazyDeadline) Err() error {
	if real := c.real.Load(); real != nil {
		return (*real).Err()
	}
	if err := c.parent.Err(); err != nil {
		return err
	}
	if !time.Now().Before(c.deadline) {
		return context.DeadlineExceeded
	}
	return nil
}

// Value goes to the real context: context.Cause and the children of this
// one look up the cancellation they hang on by a Value.
func (c *lazyDeadline) Value(key any) any { return c.make().Value(key) }

// stop releases the timer, if there is one.
func (c *lazyDeadline) stop() {
	if c.real.Load() != nil {
		c.cancel()
	}
}
