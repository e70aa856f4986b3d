package appliance_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/100steps/wxappliance/appliance/sandbox"
)

func TestCORS(t *testing.T) {
	h := newHarness(t)
	b := h.browser()
	b.mustLogin(sandbox.OpenIDZhangsan)

	allowed := b.get("/auth/user/openid", "Origin", "https://app.example.com")
	if allowed.Header.Get("Access-Control-Allow-Origin") != "https://app.example.com" ||
		allowed.Header.Get("Access-Control-Allow-Credentials") != "true" ||
		!strings.Contains(strings.Join(allowed.Header.Values("Vary"), ","), "Origin") {
		t.Fatalf("allowed origin headers: %v", allowed.Header)
	}
	foreign := b.get("/auth/user/openid", "Origin", "https://evil.com")
	if v := foreign.Header.Get("Access-Control-Allow-Origin"); v != "" {
		t.Fatalf("foreign origin got ACAO %q", v)
	}
	if foreign.Header.Get("Access-Control-Allow-Credentials") != "" {
		t.Fatal("foreign origin got credentials")
	}

	preflight := func(origin string) *http.Response {
		req, _ := http.NewRequest(http.MethodOptions, h.srv.URL+"/offiaccount/jssdk", nil)
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		req.Header.Set("Access-Control-Request-Headers", "content-type")
		return b.do(req).Response
	}
	ok := preflight("https://app.example.com")
	if ok.StatusCode != http.StatusNoContent || ok.Header.Get("Access-Control-Allow-Origin") != "https://app.example.com" ||
		!strings.Contains(ok.Header.Get("Access-Control-Allow-Methods"), "POST") ||
		ok.Header.Get("Access-Control-Allow-Headers") != "content-type" {
		t.Fatalf("allowed preflight: %d %v", ok.StatusCode, ok.Header)
	}
	bad := preflight("https://evil.com")
	if bad.StatusCode != http.StatusForbidden || bad.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("foreign preflight: %d %v", bad.StatusCode, bad.Header)
	}
	// Only the browser routes do CORS.
	if v := b.get("/healthz", "Origin", "https://app.example.com").Header.Get("Access-Control-Allow-Origin"); v != "" {
		t.Fatalf("healthz answered CORS: %q", v)
	}
}

func TestMethodsAndUnknownPaths(t *testing.T) {
	h := newHarness(t)
	b := h.browser()
	for _, tt := range []struct{ method, path, allow string }{
		{"POST", "/auth", "GET"},
		{"POST", "/auth/user/openid", "GET"},
		{"DELETE", "/auth/user", "GET"},
		{"GET", "/offiaccount/jssdk", "POST"},
		{"PUT", "/offiaccount/media", "GET"},
	} {
		req, _ := http.NewRequest(tt.method, h.srv.URL+tt.path, nil)
		resp := b.do(req)
		if st, _ := resp.envelope(t); st != 405 || resp.Header.Get("Allow") != tt.allow {
			t.Errorf("%s %s: %d allow %q", tt.method, tt.path, st, resp.Header.Get("Allow"))
		}
	}
	if st, _ := b.get("/nope").envelope(t); st != 404 {
		t.Fatalf("unknown path %d", st)
	}
}

// Nothing secret reaches the log: not the app secret, tokens, codes,
// states or session ids.
func TestLogsCarryNoSecrets(t *testing.T) {
	h := newHarness(t)
	b := h.browser()
	authz := b.startLogin(returnPage, "ticket", "1")
	callback := b.authorize(authz, sandbox.OpenIDXiaoming)
	resp := b.get(callback)
	b.get("/auth/user")
	b.get("/offiaccount/user")
	b.post("/offiaccount/jssdk", "", `{"url":"https://app.example.com/"}`)
	h.sb.ExpireTokens()
	b.get("/auth/user")
	b.get("/offiaccount/user")

	logs := h.logs.String()
	if !strings.Contains(logs, "/auth/code") {
		t.Fatal("the log is not being captured")
	}
	secrets := map[string]string{
		"app secret":  h.cfg.WeChat.AppSecret,
		"session id":  b.sessionCookie().Value,
		"state":       authz.Query().Get("state"),
		"binding":     bindingOf(t, b),
		"code":        callbackParam(t, callback, "code"),
		"ticket":      locationParam(t, resp, "wx_ticket"),
		"app token":   mustToken(t, h),
		"query names": "access_token=",
	}
	for what, s := range secrets {
		if s == "" {
			t.Fatalf("%s is empty: test broken", what)
		}
		if strings.Contains(logs, s) {
			t.Errorf("log contains the %s", what)
		}
	}
}

// Backups hold every user's tokens: they are served on the admin listener
// only, never on the public one (where a documented nginx prefix would
// expose them).
func TestAdminRoutesAreNotPublic(t *testing.T) {
	h := newHarness(t)
	for _, path := range []string{"/admin/backup", "/admin/"} {
		if st, _ := h.browser().get(path).envelope(t); st != http.StatusNotFound {
			t.Fatalf("public %s: %d, want 404", path, st)
		}
	}
	admin := httptest.NewServer(h.app.AdminHandler())
	defer admin.Close()
	resp, err := http.Get(admin.URL + "/admin/backup")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("admin /admin/backup without a token: %d, want 401", resp.StatusCode)
	}
}
