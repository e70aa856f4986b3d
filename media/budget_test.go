package media_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/100steps/wxappliance/appliance/poll"
	"github.com/100steps/wxappliance/media"
)

type grant struct {
	n   int64
	err error
}

// acquireAsync starts an Acquire and waits until it is in line.
func acquireAsync(t *testing.T, ctx context.Context, b *media.Budget, n int64) chan grant {
	t.Helper()
	before := b.Waiting()
	ch := make(chan grant, 1)
	go func() {
		got, err := b.Acquire(ctx, n)
		ch <- grant{got, err}
	}()
	poll.Until(t, "the caller to wait in line", func() bool { return b.Waiting() == before+1 })
	return ch
}

func mustAcquire(t *testing.T, b *media.Budget, n int64) int64 {
	t.Helper()
	got, err := b.Acquire(context.Background(), n)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func pending(ch chan grant) bool {
	select {
	case g := <-ch:
		ch <- g
		return false
	default:
		return true
	}
}

func TestBudgetTakesAndGivesBack(t *testing.T) {
	b := media.NewBudget(100)
	if got := mustAcquire(t, b, 60); got != 60 || b.Used() != 60 {
		t.Fatalf("took %d, used %d", got, b.Used())
	}
	mustAcquire(t, b, 40)
	b.Release(60)
	b.Release(40)
	if b.Used() != 0 || b.Waiting() != 0 {
		t.Fatalf("used %d, waiting %d", b.Used(), b.Waiting())
	}
}

// Waiters are served in arrival order: a small request does not overtake
// a big one that came first, and both get in once there is room.
func TestBudgetServesInOrder(t *testing.T) {
	b := media.NewBudget(100)
	mustAcquire(t, b, 100)
	big := acquireAsync(t, context.Background(), b, 80)
	small := acquireAsync(t, context.Background(), b, 10)
	b.Release(30) // room for small, not for big
	// Room is handed over inside Release: Used tells at once.
	if b.Used() != 70 || b.Waiting() != 2 || !pending(big) || !pending(small) {
		t.Fatalf("used %d, waiting %d: a waiter got in before the one in front of it", b.Used(), b.Waiting())
	}
	b.Release(70)
	if g := <-big; g.err != nil || g.n != 80 {
		t.Fatalf("big: %+v", g)
	}
	if g := <-small; g.err != nil || g.n != 10 {
		t.Fatalf("small: %+v", g)
	}
	if b.Used() != 90 {
		t.Fatalf("used %d, want 90", b.Used())
	}
}

func TestBudgetWaitEndsWithTheContext(t *testing.T) {
	b := media.NewBudget(100)
	mustAcquire(t, b, 100)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	got, err := b.Acquire(ctx, 1)
	if !errors.Is(err, context.DeadlineExceeded) || got != 0 {
		t.Fatalf("took %d, err %v", got, err)
	}
	if b.Used() != 100 || b.Waiting() != 0 {
		t.Fatalf("used %d, waiting %d after giving up", b.Used(), b.Waiting())
	}
}

// The head of the line giving up lets those behind it in.
func TestBudgetHeadGivingUpLetsOthersIn(t *testing.T) {
	b := media.NewBudget(100)
	mustAcquire(t, b, 90)
	ctx, cancel := context.WithCancel(context.Background())
	head := acquireAsync(t, ctx, b, 50)
	next := acquireAsync(t, context.Background(), b, 10)
	cancel()
	if g := <-head; !errors.Is(g.err, context.Canceled) {
		t.Fatalf("head: %+v", g)
	}
	if g := <-next; g.err != nil || g.n != 10 {
		t.Fatalf("next: %+v", g)
	}
	if b.Used() != 100 {
		t.Fatalf("used %d, want 100", b.Used())
	}
}

// More than the whole budget takes the whole budget, once it is all free.
func TestBudgetOversizeTakesItAll(t *testing.T) {
	b := media.NewBudget(100)
	mustAcquire(t, b, 1)
	huge := acquireAsync(t, context.Background(), b, 1000)
	b.Release(1)
	if g := <-huge; g.err != nil || g.n != 100 {
		t.Fatalf("huge: %+v", g)
	}
	b.Release(100)
	if b.Used() != 0 {
		t.Fatalf("used %d", b.Used())
	}
}
