package kvtest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/100steps/wxappliance/kv"
)

// deliveryDeadline bounds the wait for a notice that normally arrives at
// once.
const deliveryDeadline = 30 * time.Second

// RunBusTests checks that the buses open returns behave as kv.Bus
// promises. open is called once per subtest and must return a bus not
// shared with other subtests.
func RunBusTests(t *testing.T, open func(t *testing.T) kv.Bus) {
	t.Run("Delivery", func(t *testing.T) {
		b := open(t)
		ch := subscribe(t, b, t.Context(), "c")
		for _, m := range []string{"one", "two", "three"} {
			publish(t, b, "c", m)
		}
		for _, want := range []string{"one", "two", "three"} {
			if got := receive(t, ch); got != want {
				t.Fatalf("received %q, want %q (notices from one publisher arrive in order)", got, want)
			}
		}
	})
	t.Run("EverySubscriber", func(t *testing.T) {
		b := open(t)
		ch1 := subscribe(t, b, t.Context(), "c")
		ch2 := subscribe(t, b, t.Context(), "c")
		publish(t, b, "c", "hello")
		got1 := receiveBytes(t, ch1)
		// Each subscriber has its own copy.
		copy(got1, "HELLO")
		if got := receive(t, ch2); got != "hello" {
			t.Fatalf("second subscriber received %q, want hello", got)
		}
	})
	t.Run("ChannelsAreSeparate", func(t *testing.T) {
		b := open(t)
		chA := subscribe(t, b, t.Context(), "a")
		chB := subscribe(t, b, t.Context(), "b")
		publish(t, b, "a", "a1")
		publish(t, b, "b", "b1")
		publish(t, b, "a", "a2")
		if got := receive(t, chB); got != "b1" {
			t.Fatalf("subscriber of b received %q first, want b1", got)
		}
		for _, want := range []string{"a1", "a2"} {
			if got := receive(t, chA); got != want {
				t.Fatalf("subscriber of a received %q, want %q", got, want)
			}
		}
	})
	t.Run("PublishedSliceIsNotKept", func(t *testing.T) {
		b := open(t)
		ch := subscribe(t, b, t.Context(), "c")
		msg := []byte("original")
		if err := b.Publish(t.Context(), "c", msg); err != nil {
			t.Fatalf("Publish: %v", err)
		}
		copy(msg, "CHANGED!")
		if got := receive(t, ch); got != "original" {
			t.Fatalf("received %q, want original", got)
		}
	})
	t.Run("NoSubscribers", func(t *testing.T) {
		b := open(t)
		if err := b.Publish(t.Context(), "nobody", []byte("x")); err != nil {
			t.Fatalf("Publish without subscribers = %v, want nil", err)
		}
	})
	t.Run("EndsWithContext", func(t *testing.T) {
		b := open(t)
		ctx, cancel := context.WithCancel(t.Context())
		ch := subscribe(t, b, ctx, "c")
		cancel()
		timeout := time.After(deliveryDeadline)
		for {
			select {
			case _, ok := <-ch:
				if !ok {
					return
				}
			case <-timeout:
				t.Fatalf("channel still open %v after its context ended", deliveryDeadline)
			}
		}
	})
	t.Run("CanceledContext", func(t *testing.T) {
		b := open(t)
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if _, err := b.Subscribe(ctx, "c"); err == nil {
			t.Error("Subscribe with a canceled context succeeded")
		}
		if err := b.Publish(ctx, "c", []byte("x")); err == nil {
			t.Error("Publish with a canceled context succeeded")
		}
	})
	t.Run("SlowSubscriberDoesNotBlock", func(t *testing.T) {
		b := open(t)
		ch := subscribe(t, b, t.Context(), "c")
		// Nobody reads ch while far more notices than any buffer are sent.
		done := make(chan error, 1)
		go func() {
			for i := range 500 {
				if err := b.Publish(t.Context(), "c", fmt.Appendf(nil, "n%d", i)); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("Publish: %v", err)
			}
		case <-time.After(deliveryDeadline):
			t.Fatalf("publishing to a subscriber that does not read blocked for %v", deliveryDeadline)
		}
		// The subscriber lost notices but still works once it reads.
		awaitNotice(t, b, ch, "c", "after")
	})
}

// awaitNotice publishes msg on channel until ch yields it, reading and
// dropping whatever else comes: for subscribers that may have missed
// notices (full buffers, a reconnect in progress).
func awaitNotice(t *testing.T, b kv.Bus, ch <-chan []byte, channel, msg string) {
	t.Helper()
	stop := time.After(deliveryDeadline)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		// Errors are expected while a store reconnects.
		lastErr = b.Publish(t.Context(), channel, []byte(msg))
		for drained := false; !drained; {
			select {
			case got, ok := <-ch:
				if !ok {
					t.Fatalf("subscription closed while waiting for %q", msg)
				}
				if string(got) == msg {
					return
				}
			case <-tick.C:
				drained = true
			case <-stop:
				t.Fatalf("%q not received within %v (last Publish: %v)", msg, deliveryDeadline, lastErr)
			}
		}
	}
}

func subscribe(t *testing.T, b kv.Bus, ctx context.Context, channel string) <-chan []byte {
	t.Helper()
	ch, err := b.Subscribe(ctx, channel)
	if err != nil {
		t.Fatalf("Subscribe(%q): %v", channel, err)
	}
	return ch
}

func publish(t *testing.T, b kv.Bus, channel, msg string) {
	t.Helper()
	if err := b.Publish(t.Context(), channel, []byte(msg)); err != nil {
		t.Fatalf("Publish(%q): %v", channel, err)
	}
}

func receive(t *testing.T, ch <-chan []byte) string {
	t.Helper()
	return string(receiveBytes(t, ch))
}

func receiveBytes(t *testing.T, ch <-chan []byte) []byte {
	t.Helper()
	select {
	case m, ok := <-ch:
		if !ok {
			t.Fatal("subscription closed")
		}
		return m
	case <-time.After(deliveryDeadline):
		t.Fatalf("nothing received within %v", deliveryDeadline)
	}
	return nil
}
