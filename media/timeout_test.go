package media_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/100steps/wxappliance/media"
	"github.com/100steps/wxappliance/oauth"
)

// The deadlines of these tests: WeChat may keep us waiting stallTimeout
// (wechat.timeout), a whole download may take wholeTimeout (media.timeout).
// A fault must end the download with the timeout class well before
// wholeTimeout; how long exactly is not asserted, the machine may be busy.
const (
	stallTimeout = time.Second
	wholeTimeout = time.Minute
)

func timeoutOptions() media.Options {
	return media.Options{MaxBytes: 1 << 20, Timeout: wholeTimeout, StallTimeout: stallTimeout}
}

// hang waits until the client gives up (or the test ends).
func hang(w http.ResponseWriter, r *http.Request) {
	select {
	case <-r.Context().Done():
	case <-time.After(2 * wholeTimeout):
	}
}

func TestWeChatSilenceIsATimeout(t *testing.T) {
	const sent = 100 << 10
	tests := []struct {
		name    string
		handler http.HandlerFunc
		copied  int // bytes the writer gets before the stall
	}{
		{"no answer", hang, -1},
		{"headers only", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "image/jpeg")
			w.Header().Set("Content-Length", strconv.Itoa(1<<20))
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			hang(w, r)
		}, -1},
		{"stalls mid-file", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "image/jpeg")
			w.Header().Set("Content-Length", strconv.Itoa(1<<20))
			w.Write(make([]byte, sent))
			w.(http.Flusher).Flush()
			hang(w, r)
		}, sent},
		{"stalls mid-file, size unknown", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "image/jpeg")
			w.Write(make([]byte, sent))
			w.(http.Flusher).Flush()
			hang(w, r)
		}, sent},
		{"stalls mid-error", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			io.WriteString(w, `{"errcode":40007,`)
			w.(http.Flusher).Flush()
			hang(w, r)
		}, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc := newServiceWith(t, tt.handler, timeoutOptions())
			var buf bytes.Buffer
			opened := false
			start := time.Now()
			err := svc.Stream(context.Background(), "m", func(media.Head) (io.Writer, error) {
				opened = true
				return &buf, nil
			})
			elapsed := time.Since(start)
			if !errors.Is(err, oauth.ErrTimeout) {
				t.Fatalf("err = %v, want oauth.ErrTimeout", err)
			}
			if elapsed >= wholeTimeout {
				t.Fatalf("gave up after %v, not before media's whole deadline %v", elapsed, wholeTimeout)
			}
			if opened != (tt.copied >= 0) || (opened && buf.Len() != tt.copied) {
				t.Fatalf("opened = %v with %d bytes, want %d", opened, buf.Len(), tt.copied)
			}
		})
	}
}

// A caller that takes its time with what it was given is not WeChat
// stalling: only reads from WeChat are timed.
func TestSlowWriterIsNotAStall(t *testing.T) {
	body := bytes.Repeat([]byte("x"), 64<<10)
	svc := newServiceWith(t, answer("image/jpeg", string(body)), timeoutOptions())
	var buf bytes.Buffer
	waited := false
	err := svc.Stream(context.Background(), "m", func(media.Head) (io.Writer, error) {
		return writerFunc(func(p []byte) (int, error) {
			if !waited {
				// Longer than the stall timeout, with the rest of the file
				// waiting in the socket.
				time.Sleep(2 * stallTimeout)
				waited = true
			}
			return buf.Write(p)
		}), nil
	})
	if err != nil || !bytes.Equal(buf.Bytes(), body) {
		t.Fatalf("err = %v, got %d of %d bytes", err, buf.Len(), len(body))
	}
}

// A file that keeps coming may take longer than the stall timeout in all.
func TestSteadyFileOutlastsTheStallTimeout(t *testing.T) {
	// Gaps of a quarter of the stall timeout leave a busy machine plenty
	// of slack; twelve of them outlast it.
	const chunks = 12
	stall := 2 * stallTimeout
	svc := newServiceWith(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/jpeg")
		for range chunks {
			w.Write(make([]byte, 1000))
			w.(http.Flusher).Flush()
			time.Sleep(stall / 4)
		}
	}, media.Options{MaxBytes: 1 << 20, Timeout: wholeTimeout, StallTimeout: stall})
	start := time.Now()
	f, err := svc.Fetch(context.Background(), "m")
	if err != nil || len(f.Data) != chunks*1000 {
		t.Fatalf("err = %v", err)
	}
	if elapsed := time.Since(start); elapsed <= stall {
		t.Fatalf("took %v, not longer than the stall timeout: the test proves nothing", elapsed)
	}
}

// media.timeout still bounds a file that trickles in.
func TestWholeDownloadDeadline(t *testing.T) {
	svc := newServiceWith(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/jpeg")
		for {
			if _, err := w.Write([]byte("x")); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}, media.Options{MaxBytes: 1 << 20, Timeout: 2 * time.Second, StallTimeout: time.Minute})
	_, err := svc.Fetch(context.Background(), "m")
	if !errors.Is(err, oauth.ErrTimeout) {
		t.Fatalf("err = %v, want oauth.ErrTimeout", err)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
