package appliance_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/100steps/wxappliance/appliance"
	"github.com/100steps/wxappliance/appliance/sandbox"
)

// With wechat.timeout at 1 s and media.timeout at a minute, a WeChat that
// stops answering ends a media request after about wechat.timeout: 504 when
// nothing was sent yet, a cut connection when the file had begun. Only
// "before media.timeout" is asserted; the machine may be busy.
const (
	mediaStall = time.Second
	mediaWhole = time.Minute
)

var mediaRoutes = []string{"/offiaccount/media", "/offiaccount/media/raw"}

func mediaTimeouts(c *appliance.Config) {
	c.WeChat.Timeout = appliance.Duration(mediaStall)
	c.Media.Timeout = appliance.Duration(mediaWhole)
}

// withMediaGet points the appliance at a WeChat whose cgi-bin/media/get is
// mediaGet; a sandbox of its own serves the rest.
func withMediaGet(t *testing.T, mediaGet http.HandlerFunc) func(*appliance.Config) {
	sb := sandbox.New(sandbox.Options{})
	mux := http.NewServeMux()
	mux.Handle("/", sb)
	mux.HandleFunc("/cgi-bin/media/get", mediaGet)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return func(c *appliance.Config) {
		c.WeChat.APIBase = srv.URL
		c.WeChat.AppID = sb.AppID()
	}
}

func hangUntilGone(w http.ResponseWriter, r *http.Request) {
	select {
	case <-r.Context().Done():
	case <-time.After(2 * mediaWhole):
	}
}

func TestMediaWeChatSilentIs504(t *testing.T) {
	headersOnly := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/jpeg")
		w.Header().Set("Content-Length", strconv.Itoa(1<<20))
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		hangUntilGone(w, r)
	}
	cases := []struct {
		name      string
		configure func(*testing.T, *harness)
		extra     func(*testing.T) func(*appliance.Config)
	}{
		{"no answer", func(t *testing.T, h *harness) {
			h.sb.SetFault("cgi-bin/media/get", sandbox.Fault{Hang: true})
		}, nil},
		{"headers, then nothing", nil, func(t *testing.T) func(*appliance.Config) { return withMediaGet(t, headersOnly) }},
	}
	for _, tc := range cases {
		for _, route := range mediaRoutes {
			t.Run(tc.name+route, func(t *testing.T) {
				configure := []func(*appliance.Config){mediaTimeouts}
				if tc.extra != nil {
					configure = append(configure, tc.extra(t))
				}
				h := newHarness(t, configure...)
				if tc.configure != nil {
					tc.configure(t, h)
				}
				start := time.Now()
				resp := get(t, h.srv.URL+route+"?media_id="+sandbox.MediaImage)
				elapsed := time.Since(start)
				if resp.err != nil {
					t.Fatalf("after %v: %v", elapsed, resp.err)
				}
				if resp.status != 504 || elapsed >= mediaWhole {
					t.Fatalf("%d %s after %v; want 504 before media.timeout (%v)", resp.status, resp.body, elapsed, mediaWhole)
				}
			})
		}
	}
}

// WeChat stalling mid-file: the answer has begun, so the connection is cut
// (the browser sees a failed download, not a short file), well before
// media.timeout.
func TestMediaWeChatStallMidFileCutsTheAnswer(t *testing.T) {
	midFile := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/jpeg")
		w.Header().Set("Content-Length", strconv.Itoa(1<<20))
		w.Write(make([]byte, 100<<10))
		w.(http.Flusher).Flush()
		hangUntilGone(w, r)
	}
	for _, route := range mediaRoutes {
		t.Run(route, func(t *testing.T) {
			h := newHarness(t, mediaTimeouts, withMediaGet(t, midFile))
			start := time.Now()
			resp := get(t, h.srv.URL+route+"?media_id=m")
			elapsed := time.Since(start)
			if resp.err == nil || resp.status != 200 {
				t.Fatalf("%d, body read err %v: want 200 and a cut body", resp.status, resp.err)
			}
			if elapsed >= mediaWhole {
				t.Fatalf("cut after %v, not before media.timeout (%v)", elapsed, mediaWhole)
			}
		})
	}
}

type answer struct {
	status int
	body   []byte
	err    error // reading the body
}

// get fetches url with a client that waits longer than media.timeout, so
// only the appliance decides when the request ends.
func get(t *testing.T, url string) answer {
	t.Helper()
	client := &http.Client{Timeout: 2 * mediaWhole}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, body, err}
}
