package appliance

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
)

// slowWriter records each write and holds it until released, so that the
// test sees lines pile up behind a write in progress.
type slowWriter struct {
	mu      sync.Mutex
	writes  []string
	entered chan struct{}
	release chan struct{}
}

func (w *slowWriter) Write(p []byte) (int, error) {
	w.entered <- struct{}{}
	<-w.release
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes = append(w.writes, string(p))
	return len(p), nil
}

// Lines that come while a write is in progress go out together in the next
// one, in order, and nobody waits for a write to queue a line.
func TestLogWriterBatches(t *testing.T) {
	w := &slowWriter{entered: make(chan struct{}, 16), release: make(chan struct{}, 16)}
	l := NewLogWriter(w)
	fmt.Fprint(l, "one\n")
	<-w.entered // the goroutine is writing "one"
	for i := range 5 {
		fmt.Fprintf(l, "line %d\n", i) // returns although the write is stuck
	}
	w.release <- struct{}{}
	<-w.entered
	w.release <- struct{}{}
	l.Flush()
	want := []string{"one\n", "line 0\nline 1\nline 2\nline 3\nline 4\n"}
	if fmt.Sprint(w.writes) != fmt.Sprint(want) {
		t.Fatalf("writes %q, want %q", w.writes, want)
	}

	// After Close, what was queued is out and later lines go straight on.
	fmt.Fprint(l, "queued\n")
	<-w.entered
	closed := make(chan struct{})
	go func() { l.Close(); close(closed) }()
	w.release <- struct{}{}
	<-closed
	w.release <- struct{}{} // for the direct write that follows
	fmt.Fprint(l, "after\n")
	<-w.entered
	if got := strings.Join(w.writes[2:], ""); got != "queued\nafter\n" {
		t.Fatalf("after Close: %q", got)
	}
}

// Many writers at once: every line arrives whole, none twice.
func TestLogWriterConcurrent(t *testing.T) {
	var out bytes.Buffer
	var mu sync.Mutex
	l := NewLogWriter(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return out.Write(p)
	}))
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				fmt.Fprintf(l, "g%d-%d\n", g, i)
			}
		})
	}
	wg.Wait()
	l.Close()
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	seen := map[string]bool{}
	for _, line := range lines {
		if seen[line] {
			t.Fatalf("line %q twice", line)
		}
		seen[line] = true
	}
	if len(seen) != 8*500 {
		t.Fatalf("%d lines, want %d", len(seen), 8*500)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
