package sandbox

import (
	"sync"
	"time"
)

// Clock is a clock tests set, for Options.Now and the appliance's own, so
// that tokens, tickets and sessions expire without anyone waiting. The
// zero value follows the real clock plus what Advance added; NewClock
// starts one that stands still at start until advanced.
type Clock struct {
	mu     sync.Mutex
	start  time.Time // zero: the real clock
	offset time.Duration
}

// NewClock returns a Clock frozen at start.
func NewClock(start time.Time) *Clock { return &Clock{start: start} }

// Now is the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.start.IsZero() {
		return time.Now().Add(c.offset)
	}
	return c.start.Add(c.offset)
}

// Advance moves the clock on by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
}
