package appliance

import (
	"context"
	"errors"
	"testing"
	"time"
)

// Until something waits on it, a lazyDeadline answers from the parent and
// the clock, without a timer; from then on it is context.WithDeadline.
func TestLazyDeadline(t *testing.T) {
	t.Run("no timer for a look at Err", func(t *testing.T) {
		c := newLazyDeadline(context.Background(), time.Hour)
		if err := c.Err(); err != nil {
			t.Fatal(err)
		}
		if d, ok := c.Deadline(); !ok || time.Until(d) < 59*time.Minute {
			t.Fatalf("deadline %v %v", d, ok)
		}
		if c.real.Load() != nil {
			t.Fatal("Err and Deadline built the real context")
		}
		c.stop()
	})
	t.Run("past the deadline", func(t *testing.T) {
		c := newLazyDeadline(context.Background(), -time.Second)
		if err := c.Err(); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Err = %v", err)
		}
		<-c.Done()
		if err := c.Err(); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Err after Done = %v", err)
		}
		if cause := context.Cause(c); !errors.Is(cause, context.DeadlineExceeded) {
			t.Fatalf("Cause = %v", cause)
		}
	})
	t.Run("the deadline fires Done and a child's", func(t *testing.T) {
		c := newLazyDeadline(context.Background(), 50*time.Millisecond)
		defer c.stop()
		child, cancel := context.WithCancel(c)
		defer cancel()
		select {
		case <-child.Done():
		case <-time.After(30 * time.Second):
			t.Fatal("the deadline never reached the child")
		}
		if !errors.Is(c.Err(), context.DeadlineExceeded) || !errors.Is(child.Err(), context.DeadlineExceeded) {
			t.Fatalf("Err %v, child %v", c.Err(), child.Err())
		}
	})
	t.Run("the parent's cancellation", func(t *testing.T) {
		parent, cancelParent := context.WithCancelCause(context.Background())
		type key struct{}
		parent = context.WithValue(parent, key{}, "v")
		before := newLazyDeadline(parent, time.Hour) // Done never asked
		after := newLazyDeadline(parent, time.Hour)
		done := after.Done()
		cause := errors.New("browser left")
		cancelParent(cause)
		<-done
		for name, c := range map[string]*lazyDeadline{"before": before, "after": after} {
			if !errors.Is(c.Err(), context.Canceled) || !errors.Is(context.Cause(c), cause) || c.Value(key{}) != "v" {
				t.Errorf("%s: Err %v, Cause %v, Value %v", name, c.Err(), context.Cause(c), c.Value(key{}))
			}
		}
	})
	t.Run("an earlier parent deadline", func(t *testing.T) {
		parent, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		c := newLazyDeadline(parent, time.Hour)
		if d, _ := c.Deadline(); time.Until(d) > time.Minute {
			t.Fatalf("deadline %v is the later one", d)
		}
	})
}
