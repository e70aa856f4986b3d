package sandbox

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

func newClock() *Clock { return NewClock(time.Date(2025, 3, 1, 8, 0, 0, 0, time.UTC)) }

// env is a sandbox behind a test server, with a frozen clock.
type env struct {
	t     *testing.T
	sb    *Sandbox
	srv   *httptest.Server
	clock *Clock
	opts  Options
}

func newEnv(t *testing.T) *env {
	t.Helper()
	c := newClock()
	opts := Options{Now: c.Now}
	sb := New(opts)
	srv := httptest.NewServer(sb)
	t.Cleanup(srv.Close)
	return &env{t: t, sb: sb, srv: srv, clock: c, opts: opts}
}

// noRedirect is a client that returns redirects instead of following them.
var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error {
	return http.ErrUseLastResponse
}}

// answer is a raw response.
type answer struct {
	Status int
	Header http.Header
	Body   []byte
}

func (a answer) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(a.Body, &m); err != nil {
		t.Fatalf("answer is not a JSON object: %v: %q", err, a.Body)
	}
	return m
}

// errcode returns the answer's errcode, 0 when absent.
func (a answer) errcode(t *testing.T) int {
	t.Helper()
	if v, ok := a.json(t)["errcode"]; ok {
		return int(v.(float64))
	}
	return 0
}

func (e *env) do(method, path string, body string) answer {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.srv.URL+"/"+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	resp, err := noRedirect.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return answer{resp.StatusCode, resp.Header, b}
}

func (e *env) get(path string, q url.Values) answer {
	e.t.Helper()
	if q != nil {
		path += "?" + q.Encode()
	}
	return e.do(http.MethodGet, path, "")
}

func (e *env) post(path string, q url.Values, body string) answer {
	e.t.Helper()
	if q != nil {
		path += "?" + q.Encode()
	}
	return e.do(http.MethodPost, path, body)
}

// wantErr fails unless a is WeChat's error answer with code.
func wantErr(t *testing.T, a answer, code int) {
	t.Helper()
	if a.Status != http.StatusOK {
		t.Fatalf("status %d, want 200 (body %q)", a.Status, a.Body)
	}
	if got := a.errcode(t); got != code {
		t.Fatalf("errcode %d, want %d (body %s)", got, code, a.Body)
	}
	if msg, _ := a.json(t)["errmsg"].(string); msg == "" {
		t.Fatalf("errcode %d without errmsg: %s", code, a.Body)
	}
}

// appToken gets a new cgi-bin/token token.
func (e *env) appToken() string {
	e.t.Helper()
	a := e.get("cgi-bin/token", url.Values{
		"grant_type": {"client_credential"}, "appid": {DefaultAppID}, "secret": {DefaultAppSecret},
	})
	tok, _ := a.json(e.t)["access_token"].(string)
	if tok == "" {
		e.t.Fatalf("no access_token: %s", a.Body)
	}
	return tok
}

// userInfo calls cgi-bin/user/info with tok for openid.
func (e *env) userInfo(tok, openid string) answer {
	e.t.Helper()
	return e.get("cgi-bin/user/info", url.Values{"access_token": {tok}, "openid": {openid}, "lang": {"zh_CN"}})
}

// authorizeQuery is a correct authorize query in WeChat's order.
func authorizeQuery(redirectURI, scope, state string) string {
	return "appid=" + DefaultAppID +
		"&redirect_uri=" + url.QueryEscape(redirectURI) +
		"&response_type=code&scope=" + scope + "&state=" + state
}

// code runs the authorization page flow for openid and returns the code.
func (e *env) code(openid, scope string) string {
	e.t.Helper()
	a := e.do(http.MethodGet, "connect/oauth2/authorize/confirm?"+
		authorizeQuery("https://app.example/cb", scope, "s1")+"&openid="+openid, "")
	if a.Status != http.StatusFound {
		e.t.Fatalf("confirm: status %d: %s", a.Status, a.Body)
	}
	loc, err := url.Parse(a.Header.Get("Location"))
	if err != nil {
		e.t.Fatal(err)
	}
	code := loc.Query().Get("code")
	if code == "" {
		e.t.Fatalf("no code in %s", loc)
	}
	return code
}

// snsTokens exchanges a fresh code for openid and returns the answer.
func (e *env) snsTokens(openid, scope string) map[string]any {
	e.t.Helper()
	a := e.get("sns/oauth2/access_token", url.Values{
		"appid": {DefaultAppID}, "secret": {DefaultAppSecret},
		"code": {e.code(openid, scope)}, "grant_type": {"authorization_code"},
	})
	m := a.json(e.t)
	if m["access_token"] == nil {
		e.t.Fatalf("no access_token: %s", a.Body)
	}
	return m
}
