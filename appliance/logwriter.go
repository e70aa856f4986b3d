package appliance

import (
	"io"
	"sync"
	"time"
)

// LogWriter writes log lines to w from a goroutine of its own, several at a
// time when they come faster than w takes them. slog's handlers write each
// line under a mutex, one write(2) per line: under wrk, every request
// spent as long in its access log line's syscall as in its handler (a
// tenth of the CPU of POST /offiaccount/jssdk), and requests queued on the
// mutex behind it. Here Write only appends to a buffer; the goroutine
// takes whatever has piled up within logBatchDelay and writes it in one
// call, so a burst costs one syscall per batch, and a request never waits
// for a log line.
//
// A line reaches w about logBatchDelay after Write returns; a process
// killed in between loses it (kill -9 loses the last millisecond of log).
// Close writes everything and stops the goroutine.
type LogWriter struct {
	w    io.Writer
	wake chan struct{} // a buffered signal: something to write
	done chan struct{} // closed when the goroutine has returned

	mu      sync.Mutex
	drained *sync.Cond // signalled after every batch
	buf     []byte     // lines waiting for the goroutine
	writing bool
	closed  bool
}

// logBatchDelay is how long the goroutine lets lines pile up after the
// first one before it writes: under load a batch holds a millisecond's
// lines (tens at 30,000 requests/s) for one wakeup and one write(2);
// nobody reads a log a millisecond late.
const logBatchDelay = time.Millisecond

// maxLogBuffer bounds what waits in memory: past it, Write waits for the
// goroutine, as it would on w itself.
const maxLogBuffer = 1 << 20

// NewLogWriter starts a LogWriter on w.
func NewLogWriter(w io.Writer) *LogWriter {
	l := &LogWriter{w: w, wake: make(chan struct{}, 1), done: make(chan struct{})}
	l.drained = sync.NewCond(&l.mu)
	go l.run()
	return l
}

// Write queues p, a copy of it: slog reuses its buffers. After Close it
// writes p to w directly.
func (l *LogWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		<-l.done // after what was queued
		return l.w.Write(p)
	}
	for len(l.buf) > 0 && len(l.buf)+len(p) > maxLogBuffer {
		l.drained.Wait()
	}
	l.buf = append(l.buf, p...)
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default: // already signalled
	}
	return len(p), nil
}

func (l *LogWriter) run() {
	defer close(l.done)
	var spare []byte
	for range l.wake {
		l.mu.Lock()
		closed := l.closed
		l.mu.Unlock()
		if !closed {
			time.Sleep(logBatchDelay)
		}
		l.mu.Lock()
		batch := l.buf
		l.buf = spare[:0]
		l.writing = len(batch) > 0
		closed = l.closed
		l.mu.Unlock()
		if len(batch) > 0 {
			l.w.Write(batch) // nowhere to report a failure of the log itself
		}
		l.mu.Lock()
		spare = batch
		l.writing = false
		l.drained.Broadcast()
		l.mu.Unlock()
		if closed {
			return
		}
	}
}

// Flush returns once every line written so far is in w.
func (l *LogWriter) Flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for len(l.buf) > 0 || l.writing {
		l.drained.Wait()
	}
}

// Close writes what is queued and stops the goroutine; later lines are
// written directly.
func (l *LogWriter) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default: // a wake is pending: the goroutine sees closed there
	}
	<-l.done
	return nil
}
