package appliance_test

import (
	"context"
	"encoding/json"
	"html"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/100steps/wxappliance/appliance"
	"github.com/100steps/wxappliance/appliance/logtest"
	"github.com/100steps/wxappliance/appliance/sandbox"
	"github.com/100steps/wxappliance/kv"
)

// harness is the appliance behind a real HTTP server, talking to the
// sandbox behind another, with Badger in a temp dir.
type harness struct {
	t     *testing.T
	sb    *sandbox.Sandbox
	up    *httptest.Server
	srv   *httptest.Server
	app   *appliance.Appliance
	store *kv.Badger
	logs  *logtest.Buffer
	clock *sandbox.Clock
	cfg   appliance.Config
}

// returnPage is where logins come back to in tests; its host is allowed.
const returnPage = "https://app.example.com/page?x=1"

func newHarness(t *testing.T, configure ...func(*appliance.Config)) *harness {
	t.Helper()
	h := &harness{t: t, logs: &logtest.Buffer{}, clock: &sandbox.Clock{}}
	h.sb = sandbox.New(sandbox.Options{})
	h.up = httptest.NewServer(h.sb)
	t.Cleanup(h.up.Close)

	// The appliance's server is created first so base_url is known.
	h.srv = httptest.NewUnstartedServer(nil)
	base := "http://" + h.srv.Listener.Addr().String()

	cfg := appliance.DefaultConfig()
	cfg.Server.BaseURL = base
	cfg.Server.LogLevel = "debug"
	cfg.Storage.Dir = t.TempDir()
	cfg.WeChat.AppID = h.sb.AppID()
	cfg.WeChat.AppSecret = sandbox.DefaultAppSecret
	cfg.WeChat.APIBase = h.up.URL
	cfg.WeChat.APIFallback = nil
	cfg.WeChat.OAuthBase = h.up.URL
	cfg.WeChat.Timeout = appliance.Duration(2 * time.Second)
	cfg.OAuth.AllowedReturnHosts = []string{"app.example.com", "*.school.example"}
	cfg.CORS.AllowedOrigins = []string{"https://app.example.com"}
	for _, f := range configure {
		f(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	h.cfg = cfg

	store, err := kv.OpenBadger(cfg.Storage.Dir, kv.BadgerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h.store = store
	t.Cleanup(func() { store.Close() })
	log := slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h.app, err = appliance.New(cfg, appliance.Options{Store: store, Logger: log, Now: h.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.app.Close() })
	h.srv.Config.Handler = h.app.Handler()
	h.srv.Start()
	t.Cleanup(h.srv.Close)
	return h
}

// browser is a client with its own cookie jar that does not follow
// redirects, so each hop can be checked.
type browser struct {
	h      *harness
	client *http.Client
}

func (h *harness) browser() *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{h: h, client: &http.Client{
		Jar:           jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       10 * time.Second,
	}}
}

type response struct {
	*http.Response
	body []byte
}

func (r *response) envelope(t *testing.T) (status int, msg string) {
	t.Helper()
	var env struct {
		Status int             `json:"status"`
		Msg    string          `json:"msg"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(r.body, &env); err != nil {
		t.Fatalf("not an envelope: %q", r.body)
	}
	if string(env.Data) != "null" {
		t.Fatalf("envelope data = %s, want null", env.Data)
	}
	if env.Status != r.StatusCode {
		t.Fatalf("envelope status %d, HTTP status %d", env.Status, r.StatusCode)
	}
	return env.Status, env.Msg
}

func (r *response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("not JSON (%d): %q", r.StatusCode, r.body)
	}
	return m
}

func (b *browser) do(req *http.Request) *response {
	b.h.t.Helper()
	resp, err := b.client.Do(req)
	if err != nil {
		b.h.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		b.h.t.Fatal(err)
	}
	return &response{Response: resp, body: body}
}

// get fetches an absolute URL or a path on the appliance.
func (b *browser) get(target string, headers ...string) *response {
	b.h.t.Helper()
	if strings.HasPrefix(target, "/") {
		target = b.h.srv.URL + target
	}
	req, err := http.NewRequest(http.MethodGet, target, nil)
	if err != nil {
		b.h.t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	return b.do(req)
}

func (b *browser) post(path, contentType, body string, headers ...string) *response {
	b.h.t.Helper()
	req, err := http.NewRequest(http.MethodPost, b.h.srv.URL+path, strings.NewReader(body))
	if err != nil {
		b.h.t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	return b.do(req)
}

// startLogin calls /auth and returns the authorize URL it redirects to.
func (b *browser) startLogin(returnURL string, extra ...string) *url.URL {
	b.h.t.Helper()
	q := url.Values{"state": {returnURL}}
	for i := 0; i+1 < len(extra); i += 2 {
		q.Set(extra[i], extra[i+1])
	}
	resp := b.get("/auth?" + q.Encode())
	if resp.StatusCode != http.StatusFound {
		b.h.t.Fatalf("/auth answered %d: %s", resp.StatusCode, resp.body)
	}
	u, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		b.h.t.Fatal(err)
	}
	return u
}

var userLink = regexp.MustCompile(`id="user-([^"]+)"[^>]*href="([^"]+)"`)
var denyLink = regexp.MustCompile(`id="deny"[^>]*href="([^"]+)"`)
var snapshotLink = regexp.MustCompile(`id="snapshot"[^>]*href="([^"]+)"`)

// authorize plays the user on the sandbox's authorize page: picks openid
// (or refuses when openid is "") and returns the appliance callback URL
// the sandbox redirects to.
func (b *browser) authorize(authorizeURL *url.URL, openid string) string {
	b.h.t.Helper()
	page := b.get(authorizeURL.String())
	if page.StatusCode != http.StatusOK {
		b.h.t.Fatalf("authorize page %d: %s", page.StatusCode, page.body)
	}
	var link string
	if openid == "" {
		m := denyLink.FindSubmatch(page.body)
		if m == nil {
			b.h.t.Fatal("no deny link")
		}
		link = string(m[1])
	}
	for _, m := range userLink.FindAllSubmatch(page.body, -1) {
		if string(m[1]) == openid {
			link = string(m[2])
		}
	}
	if m := snapshotLink.FindSubmatch(page.body); m != nil && openid == sandbox.OpenIDSnapshot {
		link = string(m[1])
	}
	if link == "" {
		b.h.t.Fatalf("no link for %q on the authorize page", openid)
	}
	target, err := authorizeURL.Parse(html.UnescapeString(link))
	if err != nil {
		b.h.t.Fatal(err)
	}
	resp := b.get(target.String())
	if resp.StatusCode != http.StatusFound {
		b.h.t.Fatalf("confirm answered %d: %s", resp.StatusCode, resp.body)
	}
	return resp.Header.Get("Location")
}

// login runs the whole flow for openid and returns /auth/code's answer.
func (b *browser) login(openid string, extra ...string) *response {
	b.h.t.Helper()
	callback := b.authorize(b.startLogin(returnPage, extra...), openid)
	return b.get(callback)
}

// mustLogin logs in and checks the redirect back to returnPage.
func (b *browser) mustLogin(openid string, extra ...string) {
	b.h.t.Helper()
	resp := b.login(openid, extra...)
	if resp.StatusCode != http.StatusFound || !strings.HasPrefix(resp.Header.Get("Location"), returnPage) {
		b.h.t.Fatalf("login answered %d %q: %s", resp.StatusCode, resp.Header.Get("Location"), resp.body)
	}
}

// sessionCookie is the session cookie the jar holds for the appliance.
func (b *browser) sessionCookie() *http.Cookie {
	u, _ := url.Parse(b.h.srv.URL)
	for _, c := range b.client.Jar.Cookies(u) {
		if c.Name == b.h.cfg.OAuth.SessionCookie {
			return c
		}
	}
	return nil
}

func (b *browser) setCookie(name, value string) {
	u, _ := url.Parse(b.h.srv.URL)
	b.client.Jar.SetCookies(u, []*http.Cookie{{Name: name, Value: value, Path: "/"}})
}

func callbackParam(t *testing.T, rawURL, key string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	return u.Query().Get(key)
}

func locationParam(t *testing.T, resp *response, key string) string {
	t.Helper()
	return callbackParam(t, resp.Header.Get("Location"), key)
}

// sandboxConfig is the real server in sandbox mode on a free loopback port
// with its own data directory, for tests to adjust before serve.
func sandboxConfig(t testing.TB) appliance.Config {
	cfg := appliance.DefaultConfig()
	cfg.Server.Listen = "127.0.0.1:0"
	cfg.Server.AdminListen = "127.0.0.1:0"
	cfg.Storage.Dir = t.TempDir()
	cfg.WeChat.Sandbox = true
	cfg.WeChat.AppID = sandbox.DefaultAppID
	cfg.WeChat.AppSecret = sandbox.DefaultAppSecret
	cfg.OAuth.AllowedReturnHosts = []string{"127.0.0.1"}
	return cfg
}

// served is appliance.Serve running as the binary runs it.
type served struct {
	addr string
	stop context.CancelFunc // SIGTERM
	done chan struct{}
	err  error
}

// wait returns what Serve returned, once it has.
func (s *served) wait() error { <-s.done; return s.err }

// serve runs Serve with cfg until stop or the end of the test, and returns
// once it listens. A nil log discards.
func serve(t *testing.T, cfg appliance.Config, log *slog.Logger) *served {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &served{stop: cancel, done: make(chan struct{})}
	addr := make(chan string, 1)
	go func() {
		s.err = appliance.Serve(ctx, cfg, appliance.Options{Logger: log}, func(a string) { addr <- a })
		close(s.done)
	}()
	t.Cleanup(func() {
		cancel()
		if err := s.wait(); err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	select {
	case s.addr = <-addr:
		return s
	case <-s.done:
		t.Fatalf("serve: %v", s.err)
	case <-time.After(10 * time.Second):
		t.Fatal("server did not start")
	}
	return nil
}
