package rpc_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/100steps/wxappliance/appliance/poll"
	"github.com/100steps/wxappliance/appliance/sandbox"
	"github.com/100steps/wxappliance/kv/kvtest"
	"github.com/100steps/wxappliance/media"
	"github.com/100steps/wxappliance/oauth"
	"github.com/100steps/wxappliance/rpc"
)

type mediaResult struct {
	MediaData   string `json:"media_data"`
	ContentType string `json:"content_type"`
}

// withMedia makes the env's media service fetch from WeChat through
// mediaGet (the sandbox serves the rest), with opts.
func withMedia(t *testing.T, mediaGet http.HandlerFunc, opts media.Options) func(*envConfig) {
	return func(c *envConfig) {
		c.svc = func(s rpc.Services) rpc.Services {
			s.Media = newMediaService(t, mediaGet, opts)
			return s
		}
	}
}

func newMediaService(t *testing.T, mediaGet http.HandlerFunc, opts media.Options) *media.Service {
	t.Helper()
	sb := sandbox.New(sandbox.Options{})
	mux := http.NewServeMux()
	mux.Handle("/", sb)
	if mediaGet != nil {
		mux.HandleFunc("/cgi-bin/media/get", mediaGet)
	}
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	store := kvtest.Badger(t)
	client, err := oauth.NewClient(oauth.ClientConfig{BaseURL: srv.URL, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	app := oauth.NewApp(client, store, oauth.AppConfig{AppID: sb.AppID(), Secret: sandbox.DefaultAppSecret})
	return media.New(app, opts)
}

// direct is the file as WeChat (the env's sandbox) serves it.
func (e *env) direct(t *testing.T, id string) []byte {
	t.Helper()
	tok, err := e.app.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(e.up.URL + "/cgi-bin/media/get?media_id=" + id + "&access_token=" + tok.Value)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func budgetGivenBack(t *testing.T, e *env) {
	t.Helper()
	b := e.srv.MediaBudgetForTest()
	poll.Until(t, "the media budget given back", func() bool { return b.Used() == 0 && b.Waiting() == 0 })
}

// A file bigger than the whole budget, under media.max_bytes, is served
// alone with the whole budget, byte for byte.
func TestMediaGetFileOverTheBudget(t *testing.T) {
	e := newEnv(t, func(c *envConfig) {
		c.opts.MediaBudget = 1 << 20
		c.opts.MediaTimeout = time.Minute
		withMedia(t, nil, media.Options{MaxBytes: 16 << 20, Timeout: time.Minute})(c)
	})
	// The env's media service has its own sandbox; both serve the same
	// generated file.
	want := e.direct(t, sandbox.MediaBig)
	c := e.dial()
	var got mediaResult
	// 10 MiB through the race detector takes a while.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.Call(ctx, "media.get", map[string]string{"media_id": sandbox.MediaBig}, &got); err != nil {
		t.Fatal(err)
	}
	data, err := base64.StdEncoding.DecodeString(got.MediaData)
	if err != nil || got.ContentType != "image/jpeg" || !bytes.Equal(data, want) {
		t.Fatalf("err %v, %q, %d bytes, want %d", err, got.ContentType, len(data), len(want))
	}
	budgetGivenBack(t, e)
}

// Room is waited for until the call's deadline, then the call is busy;
// room given back in time lets it through.
func TestMediaGetWaitsForRoom(t *testing.T) {
	t.Run("busy when the wait runs out", func(t *testing.T) {
		e := newEnv(t, func(c *envConfig) {
			c.opts.MediaBudget = 1 << 20
			c.opts.MediaTimeout = time.Second
		})
		b := e.srv.MediaBudgetForTest()
		held := mustTake(t, b, b.Size())
		c := e.dial()
		busy := callErr(t, c, "media.get", map[string]string{"media_id": sandbox.MediaImage}, rpc.CodeBusy, 503)
		if busy.Data.Msg != "请求过多，请稍后重试" {
			t.Fatalf("msg %q", busy.Data.Msg)
		}
		if b.Used() != held || b.Waiting() != 0 {
			t.Fatalf("used %d waiting %d after the busy answer", b.Used(), b.Waiting())
		}
		b.Release(held)
		call(t, c, "media.get", map[string]string{"media_id": sandbox.MediaImage}, &mediaResult{})
		budgetGivenBack(t, e)
	})
	t.Run("served once room is given back", func(t *testing.T) {
		e := newEnv(t, func(c *envConfig) {
			c.opts.MediaBudget = 1 << 20
			c.opts.MediaTimeout = time.Minute
		})
		b := e.srv.MediaBudgetForTest()
		held := mustTake(t, b, b.Size())
		c := e.dial()
		done := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			var got mediaResult
			done <- c.Call(ctx, "media.get", map[string]string{"media_id": sandbox.MediaImage}, &got)
		}()
		poll.Until(t, "media.get waiting for room", func() bool { return b.Waiting() == 1 })
		b.Release(held)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		budgetGivenBack(t, e)
	})
}

// The budget is the server's: a file one connection holds makes another
// connection's call wait.
func TestMediaBudgetIsSharedByConnections(t *testing.T) {
	const size = 512 << 10
	release := make(chan struct{})
	slow := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/jpeg")
		if r.URL.Query().Get("media_id") != "slow" {
			io.WriteString(w, "small file")
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(size))
		w.Write(make([]byte, size/2))
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		w.Write(make([]byte, size/2))
	}
	e := newEnv(t, func(c *envConfig) {
		c.opts.MediaBudget = size // the slow file's base64 takes it all
		c.opts.MediaTimeout = time.Minute
		withMedia(t, slow, media.Options{MaxBytes: 1 << 20, Timeout: time.Minute})(c)
	})
	b := e.srv.MediaBudgetForTest()
	first, second := e.dial(), e.dial()
	results := make(chan error, 2)
	get := func(c interface {
		Call(context.Context, string, any, any) error
	}, id string) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		var got mediaResult
		results <- c.Call(ctx, "media.get", map[string]string{"media_id": id}, &got)
	}
	go get(first, "slow")
	poll.Until(t, "the slow file holding the budget", func() bool { return b.Used() == b.Size() })
	go get(second, "small")
	poll.Until(t, "the other connection waiting", func() bool { return b.Waiting() == 1 })
	close(release)
	for range 2 {
		if err := <-results; err != nil {
			t.Fatal(err)
		}
	}
	budgetGivenBack(t, e)
}

// A backend that leaves while its call waits for room leaves nothing
// behind in the budget.
func TestMediaWaitEndsWithTheConnection(t *testing.T) {
	e := newEnv(t, func(c *envConfig) {
		c.opts.MediaBudget = 1 << 20
		c.opts.MediaTimeout = time.Minute
	})
	b := e.srv.MediaBudgetForTest()
	held := mustTake(t, b, b.Size())
	r := e.raw()
	r.send(`{"jsonrpc":"2.0","id":1,"method":"media.get","params":{"media_id":"` + sandbox.MediaImage + `"}}`)
	poll.Until(t, "media.get waiting for room", func() bool { return b.Waiting() == 1 })
	r.ws.Close()
	poll.Until(t, "the waiter gone", func() bool { return b.Waiting() == 0 })
	if b.Used() != held {
		t.Fatalf("used %d, want %d", b.Used(), held)
	}
	b.Release(held)
}

// WeChat not saying the size: room for media.max_bytes is taken, the rest
// given back once the file is in; over the cap is 413.
func TestMediaGetSizeUnknown(t *testing.T) {
	body := bytes.Repeat([]byte{0xff, 0xd8, 7}, 40<<10)
	chunked := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/jpeg")
		n := len(body)
		if r.URL.Query().Get("media_id") == "huge" {
			n = 2 << 20
		}
		src := bytes.Repeat(body, 1+n/len(body))
		for off := 0; off < n; off += 32 << 10 {
			w.Write(src[off:min(off+32<<10, n)])
			w.(http.Flusher).Flush()
		}
	}
	e := newEnv(t, withMedia(t, chunked, media.Options{MaxBytes: 1 << 20, Timeout: 30 * time.Second}))
	c := e.dial()
	var got mediaResult
	call(t, c, "media.get", map[string]string{"media_id": "m"}, &got)
	data, err := base64.StdEncoding.DecodeString(got.MediaData)
	if err != nil || !bytes.Equal(data, body) {
		t.Fatalf("err %v, %d bytes, want %d", err, len(data), len(body))
	}
	callErr(t, c, "media.get", map[string]string{"media_id": "huge"}, rpc.CodeTooLarge, 413)
	budgetGivenBack(t, e)
}

// Many calls pipelined on one connection all get their own file, and the
// budget is whole again afterwards.
func TestMediaGetPipelined(t *testing.T) {
	e := newEnv(t, func(c *envConfig) { c.opts.MediaBudget = 256 << 10 })
	want := base64.StdEncoding.EncodeToString(e.direct(t, sandbox.Media64K))
	r := e.raw()
	const calls = 40
	for i := range calls {
		r.send(`{"jsonrpc":"2.0","id":` + strconv.Itoa(i) + `,"method":"media.get","params":{"media_id":"` + sandbox.Media64K + `"}}`)
	}
	seen := map[string]bool{}
	for range calls {
		w := r.recv()
		var got mediaResult
		if w.Error != nil || w.Result == nil {
			t.Fatalf("answer %s", w.raw)
		}
		if err := json.Unmarshal(w.Result, &got); err != nil || got.MediaData != want {
			t.Fatalf("id %s: %v, %d base64 bytes, want %d", w.ID, err, len(got.MediaData), len(want))
		}
		seen[string(w.ID)] = true
	}
	if len(seen) != calls {
		t.Fatalf("%d distinct ids answered, want %d", len(seen), calls)
	}
	budgetGivenBack(t, e)
}

// WeChat silent, before answering or mid-file: 504 well before
// media.timeout, after about wechat.timeout (the stall timeout).
func TestMediaGetWeChatSilent(t *testing.T) {
	const stall, whole = time.Second, time.Minute
	hang := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/jpeg")
		w.Header().Set("Content-Length", strconv.Itoa(1<<20))
		w.Write(make([]byte, 100<<10))
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}
	for _, tt := range []struct {
		name     string
		mediaGet http.HandlerFunc
	}{
		{"no answer", func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }},
		{"stalls mid-file", hang},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, func(c *envConfig) {
				c.opts.MediaTimeout = whole
				withMedia(t, tt.mediaGet, media.Options{MaxBytes: 10 << 20, Timeout: whole, StallTimeout: stall})(c)
			})
			c := e.dial()
			start := time.Now()
			callErr(t, c, "media.get", map[string]string{"media_id": "m"}, rpc.CodeTimeout, 504)
			if elapsed := time.Since(start); elapsed >= whole {
				t.Fatalf("answered after %v, not before media.timeout %v", elapsed, whole)
			}
			budgetGivenBack(t, e)
		})
	}
}

func mustTake(t *testing.T, b *media.Budget, n int64) int64 {
	t.Helper()
	got, err := b.Acquire(context.Background(), n)
	if err != nil {
		t.Fatal(err)
	}
	return got
}
