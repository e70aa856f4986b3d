package rpc_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/100steps/wxappliance/appliance/logtest"
	"github.com/100steps/wxappliance/appliance/sandbox"
	"github.com/100steps/wxappliance/jssdk"
	"github.com/100steps/wxappliance/kv"
	"github.com/100steps/wxappliance/kv/kvtest"
	"github.com/100steps/wxappliance/media"
	"github.com/100steps/wxappliance/oauth"
	"github.com/100steps/wxappliance/rpc"
	"github.com/100steps/wxappliance/rpc/client"
)

// Keys the test server accepts.
const (
	testKey  = "backend-key-0123456789"
	otherKey = "other-key-abcdefghijkl"
)

// env is the rpc server over the real services, talking to the sandbox
// behind an HTTP server, with Badger in a temp dir, behind its own HTTP
// server.
type env struct {
	t        testing.TB
	sb       *sandbox.Sandbox
	up       *httptest.Server
	store    *kv.Badger
	app      *oauth.App
	web      *oauth.Web
	sessions *oauth.Sessions
	svc      rpc.Services
	srv      *rpc.Server
	hs       *httptest.Server
	url      string
	logs     *logtest.Buffer
}

type envConfig struct {
	opts     rpc.Options
	tokenAPI string
	upstream time.Duration // the WeChat client's deadline; default 2s
	primary  string        // an API host tried before the sandbox, for failover
	svc      func(rpc.Services) rpc.Services
	server   func(*http.Server)
}

func newEnv(t testing.TB, configure ...func(*envConfig)) *env {
	t.Helper()
	cfg := envConfig{opts: rpc.Options{
		Keys:           []rpc.Key{{Name: "backend", Key: testKey}, {Name: "other", Key: otherKey}},
		AllowedOrigins: []string{"https://app.example.com"},
		CallTimeout:    3 * time.Second,
		MediaTimeout:   5 * time.Second,
	}}
	for _, f := range configure {
		f(&cfg)
	}
	e := &env{t: t, logs: &logtest.Buffer{}}
	log := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e.sb = sandbox.New(sandbox.Options{})
	e.up = httptest.NewServer(e.sb)
	t.Cleanup(e.up.Close)

	store := kvtest.Badger(t)
	e.store = store

	if cfg.upstream == 0 {
		cfg.upstream = 2 * time.Second
	}
	base, fallbacks := e.up.URL, []string(nil)
	if cfg.primary != "" {
		base, fallbacks = cfg.primary, []string{e.up.URL}
	}
	up, err := oauth.NewClient(oauth.ClientConfig{BaseURL: base, Fallbacks: fallbacks, Timeout: cfg.upstream, BusyBackoff: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	e.app = oauth.NewApp(up, store, oauth.AppConfig{AppID: e.sb.AppID(), Secret: sandbox.DefaultAppSecret, TokenAPI: cfg.tokenAPI})
	e.web = oauth.NewWeb(up, e.sb.AppID(), sandbox.DefaultAppSecret, e.up.URL, nil)
	e.sessions = oauth.NewSessions(store, e.web, oauth.SessionConfig{TTL: time.Hour})
	e.svc = rpc.Services{
		Sessions: e.sessions,
		App:      e.app,
		JSSDK: jssdk.New(e.app, store, jssdk.Options{
			AllowedHost: func(h string) bool { return h == "app.example.com" },
		}),
		Media: media.New(e.app, media.Options{MaxBytes: 10 << 20, Timeout: 5 * time.Second}),
	}
	if cfg.svc != nil {
		e.svc = cfg.svc(e.svc)
	}
	cfg.opts.Logger = log
	e.srv, err = rpc.New(e.svc, cfg.opts)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/rpc", e.srv)
	e.hs = httptest.NewUnstartedServer(mux)
	if cfg.server != nil {
		cfg.server(e.hs.Config)
	}
	e.hs.Start()
	// Close the rpc server before the HTTP server: httptest's Close waits
	// for hijacked connections it cannot see to go.
	t.Cleanup(e.hs.Close)
	t.Cleanup(func() { e.srv.Close() })
	e.url = "ws" + strings.TrimPrefix(e.hs.URL, "http") + "/rpc"
	return e
}

// dial connects the Go client with testKey.
func (e *env) dial(opts ...func(*client.Options)) *client.Client {
	e.t.Helper()
	var o client.Options
	for _, f := range opts {
		f(&o)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, e.url, testKey, &o)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	return c
}

// raw opens a bare WebSocket with testKey, for frames the client would
// never send.
func (e *env) raw() *rawConn {
	e.t.Helper()
	ws, resp, err := websocket.DefaultDialer.Dial(e.url, http.Header{"Authorization": {"Bearer " + testKey}})
	if err != nil {
		e.t.Fatalf("dial: %v (%v)", err, resp)
	}
	e.t.Cleanup(func() { ws.Close() })
	return &rawConn{t: e.t, ws: ws}
}

// login plays a user through the sandbox's authorize page and returns the
// session id the appliance would have set as cookie.
func (e *env) login(openid, scope string) string {
	e.t.Helper()
	authz := e.web.AuthorizeURL("https://app.example.com/cb", scope, "teststate")
	confirm := strings.Replace(strings.TrimSuffix(authz, "#wechat_redirect"),
		"/connect/oauth2/authorize?", "/connect/oauth2/authorize/confirm?", 1) + "&openid=" + url.QueryEscape(openid)
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.Get(confirm)
	if err != nil {
		e.t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || loc.Query().Get("code") == "" {
		e.t.Fatalf("confirm answered %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	ctx := context.Background()
	tok, err := e.web.Exchange(ctx, loc.Query().Get("code"))
	if err != nil {
		e.t.Fatal(err)
	}
	id, err := e.sessions.Create(ctx, tok)
	if err != nil {
		e.t.Fatal(err)
	}
	return id
}

func call(t *testing.T, c *client.Client, method string, params, result any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Call(ctx, method, params, result); err != nil {
		t.Fatalf("%s: %v", method, err)
	}
}

// callErr calls method, which must fail with an *client.Error of code and
// status, and returns it.
func callErr(t *testing.T, c *client.Client, method string, params any, code int64, status int) *client.Error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := c.Call(ctx, method, params, nil)
	var e *client.Error
	if !errors.As(err, &e) {
		t.Fatalf("%s: err = %v, want an rpc error %d", method, err, code)
	}
	if e.Code != code || e.Data.Status != status || e.Data.Msg == "" {
		t.Fatalf("%s: got %d %d %q, want code %d status %d", method, e.Code, e.Data.Status, e.Data.Msg, code, status)
	}
	return e
}

// rawConn is a bare WebSocket speaking frames by hand.
type rawConn struct {
	t  testing.TB
	ws *websocket.Conn
}

func (r *rawConn) send(frame string) {
	r.t.Helper()
	if err := r.ws.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
		r.t.Fatal(err)
	}
}

// wire is an answer as it arrived, id kept raw.
type wire struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Method  string          `json:"method"`
	Params  json.RawMessage `json:"params"`
	Result  json.RawMessage `json:"result"`
	Error   *struct {
		Code    int64         `json:"code"`
		Message string        `json:"message"`
		Data    rpc.ErrorData `json:"data"`
	} `json:"error"`
	raw []byte
}

func (r *rawConn) recv() wire {
	r.t.Helper()
	w, err := r.read()
	if err != nil {
		r.t.Fatal(err)
	}
	return w
}

// read is recv for goroutines other than the test's, which must not call
// t.Fatal.
func (r *rawConn) read() (wire, error) {
	r.ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, data, err := r.ws.ReadMessage()
	if err != nil {
		return wire{}, fmt.Errorf("read: %w", err)
	}
	var w wire
	if err := json.Unmarshal(data, &w); err != nil {
		return wire{}, fmt.Errorf("answer is not JSON: %q", data)
	}
	w.raw = data
	if w.JSONRPC != "2.0" {
		return wire{}, fmt.Errorf("answer without jsonrpc 2.0: %s", data)
	}
	return w, nil
}

// reply answers the next request the server sends with result, from a
// goroutine; the returned channel has the error, if any.
func (r *rawConn) reply(answer func(id string) string) <-chan error {
	errc := make(chan error, 1)
	go func() {
		req, err := r.read()
		if err == nil {
			err = r.ws.WriteMessage(websocket.TextMessage, []byte(answer(string(req.ID))))
		}
		errc <- err
	}()
	return errc
}
