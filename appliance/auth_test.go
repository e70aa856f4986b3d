package appliance_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/100steps/wxappliance/appliance"
	"github.com/100steps/wxappliance/appliance/sandbox"
	"github.com/100steps/wxappliance/oauth"
)

func TestLoginHappyPath(t *testing.T) {
	h := newHarness(t)
	b := h.browser()

	before := b.get("/auth/user/openid")
	if st, msg := before.envelope(t); st != 401 || msg != "请先登录微信" {
		t.Fatalf("before login: %d %q", st, msg)
	}

	authz := b.startLogin(returnPage)
	// WeChat's strict format: parameter order and the fragment.
	raw := authz.String()
	wantPrefix := h.up.URL + "/connect/oauth2/authorize?appid=" + h.sb.AppID() +
		"&redirect_uri=" + url.QueryEscape(h.srv.URL+"/auth/code") + "&response_type=code&scope=snsapi_userinfo&state="
	if !strings.HasPrefix(raw, wantPrefix) || !strings.HasSuffix(raw, "#wechat_redirect") {
		t.Fatalf("authorize URL %s\nwant prefix %s and #wechat_redirect", raw, wantPrefix)
	}
	state := authz.Query().Get("state")
	if !oauth.ValidSecret(state) || strings.Contains(state, "example") {
		t.Fatalf("state sent to WeChat is %q, want a random nonce", state)
	}

	callback := b.authorize(authz, sandbox.OpenIDXiaoming)
	resp := b.get(callback)
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != returnPage {
		t.Fatalf("/auth/code answered %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if rp := resp.Header.Get("Referrer-Policy"); rp != "no-referrer" {
		t.Fatalf("Referrer-Policy %q", rp)
	}
	var set *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == h.cfg.OAuth.SessionCookie {
			set = c
		}
	}
	if set == nil {
		t.Fatal("no session cookie set")
	}
	if !set.HttpOnly || set.SameSite != http.SameSiteLaxMode || set.Secure || set.Path != "/" ||
		set.MaxAge != int((720*time.Hour).Seconds()) {
		t.Fatalf("session cookie %+v", set)
	}

	openid := b.get("/auth/user/openid")
	if got := openid.json(t)["openid"]; got != sandbox.OpenIDXiaoming {
		t.Fatalf("openid %v", got)
	}
	user := b.get("/auth/user")
	if user.StatusCode != 200 {
		t.Fatalf("/auth/user %d %s", user.StatusCode, user.body)
	}
	// Chinese and emoji arrive as raw UTF-8, byte for byte.
	if !strings.Contains(string(user.body), `"nickname":"`+sandbox.NicknameXiaoming+`"`) {
		t.Fatalf("/auth/user body %s lacks nickname %q", user.body, sandbox.NicknameXiaoming)
	}
	info := user.json(t)
	for _, k := range []string{"openid", "nickname", "sex", "province", "city", "country", "headimgurl", "privilege"} {
		if _, ok := info[k]; !ok {
			t.Errorf("/auth/user lacks %q", k)
		}
	}
	// The user token, refresh token and app secret never reach the browser.
	for _, r := range []*response{resp, openid, user} {
		for _, s := range []string{"access_token", "refresh_token", sandbox.DefaultAppSecret} {
			if strings.Contains(string(r.body), s) {
				t.Fatalf("answer leaks %q: %s", s, r.body)
			}
		}
	}
}

func TestLoginChineseAndPrivateUseEmoji(t *testing.T) {
	for _, u := range []struct{ openid, nickname string }{
		{sandbox.OpenIDZhangsan, sandbox.NicknameZhangsan},
		{sandbox.OpenIDAhua, sandbox.NicknameAhua},
	} {
		t.Run(u.openid, func(t *testing.T) {
			h := newHarness(t)
			b := h.browser()
			b.mustLogin(u.openid)
			got := b.get("/auth/user").json(t)
			if got["nickname"] != u.nickname {
				t.Fatalf("nickname %q, want %q", got["nickname"], u.nickname)
			}
			if u.openid == sandbox.OpenIDZhangsan && (got["city"] != "广州" || got["province"] != "广东") {
				t.Fatalf("city/province %v/%v", got["city"], got["province"])
			}
		})
	}
}

func TestLoginRefused(t *testing.T) {
	h := newHarness(t)
	b := h.browser()
	resp := b.get(b.authorize(b.startLogin(returnPage), ""))
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != returnPage {
		t.Fatalf("refusal answered %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if b.sessionCookie() != nil {
		t.Fatal("a refused login got a session")
	}
	if n := h.sb.Count("sns/oauth2/access_token"); n != 0 {
		t.Fatalf("%d code exchanges for a refusal", n)
	}
}

func TestBaseScopeSession(t *testing.T) {
	h := newHarness(t)
	b := h.browser()
	authz := b.startLogin(returnPage, "scope", "snsapi_base")
	if authz.Query().Get("scope") != "snsapi_base" {
		t.Fatalf("scope %q", authz.Query().Get("scope"))
	}
	if resp := b.get(b.authorize(authz, sandbox.OpenIDZhangsan)); resp.StatusCode != http.StatusFound {
		t.Fatalf("login %d", resp.StatusCode)
	}
	if got := b.get("/auth/user/openid").json(t)["openid"]; got != sandbox.OpenIDZhangsan {
		t.Fatalf("openid %v", got)
	}
	st, msg := b.get("/auth/user").envelope(t)
	if st != 401 || !strings.Contains(msg, "snsapi_userinfo") {
		t.Fatalf("/auth/user with base scope: %d %q", st, msg)
	}
	if n := h.sb.Count("sns/userinfo"); n != 0 {
		t.Fatalf("asked WeChat for userinfo %d times with a base token", n)
	}
}

func TestAuthRejectsBadInput(t *testing.T) {
	h := newHarness(t)
	tests := []struct{ name, query string }{
		{"no state", ""},
		{"empty state", "state="},
		{"bad scope", "state=" + url.QueryEscape(returnPage) + "&scope=snsapi_login"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := h.browser().get("/auth?" + tt.query)
			if st, _ := resp.envelope(t); st != 400 || resp.Header.Get("Location") != "" {
				t.Fatalf("status %d location %q", st, resp.Header.Get("Location"))
			}
		})
	}
}

// No open redirect: only allowed hosts, parsed strictly.
func TestOpenRedirectRefused(t *testing.T) {
	h := newHarness(t)
	bad := []string{
		"https://evil.com/",
		"//evil.com",
		"///evil.com",
		"/\\evil.com",
		"\\\\evil.com",
		"https:evil.com",
		"https:/evil.com",
		"https:\\\\evil.com",
		"https:/\\evil.com",
		"javascript:alert(1)//app.example.com",
		"JavaScript://app.example.com/%0aalert(1)",
		"data:text/html,<script>alert(1)</script>",
		"ftp://app.example.com/",
		"https://app.example.com@evil.com/",
		"https://user:pass@app.example.com/",
		"https://app.example.com\\@evil.com/",
		"https://app.example.com%2F@evil.com/",
		"https://app.example.com%40evil.com/",
		"https://evil.com#@app.example.com",
		"https://evil.com?@app.example.com",
		"https://app.example.com.evil.com/",
		"https://evilapp.example.com/",
		"https://app.example.com\r\nSet-Cookie: x=1",
		"https://app.example.com/%0d%0aSet-Cookie:%20x=1",
		"https://app.example.com/%0D%0ALocation:%20https://evil.com",
		"https://app.example.com/\x00",
		"https://app.example.com/ space",
		"https://аpp.example.com/", // Cyrillic а
		"https://app.example.com:99999/",
		"https://app.example.com:x/",
		"https://school.example/", // *.suffix matches subdomains only
		"https://[::1]/",          // not allowed
		"http://app.example.com%2eevil.com/",
		"app.example.com/page",
		"/relative/path",
		"?state=https://app.example.com/",
	}
	for _, raw := range bad {
		t.Run(raw, func(t *testing.T) {
			resp := h.browser().get("/auth?state=" + url.QueryEscape(raw))
			if st, _ := resp.envelope(t); st != 400 {
				t.Fatalf("status %d", st)
			}
			if loc := resp.Header.Get("Location"); loc != "" {
				t.Fatalf("redirected to %q", loc)
			}
			if len(resp.Cookies()) != 0 {
				t.Fatal("cookie set for a refused return URL")
			}
		})
	}
	good := []string{
		returnPage,
		"http://app.example.com",
		"https://APP.example.com/x",
		"https://app.example.com:8443/a?b=c&d=%E4%B8%AD#/route?x=1",
		"https://a.school.example/y",
		"https://deep.a.school.example/y",
	}
	for _, raw := range good {
		t.Run("ok "+raw, func(t *testing.T) {
			if resp := h.browser().get("/auth?state=" + url.QueryEscape(raw)); resp.StatusCode != http.StatusFound {
				t.Fatalf("refused: %d %s", resp.StatusCode, resp.body)
			}
		})
	}
}

// The WeChat state is a nonce bound to the browser that started the login:
// a callback link from someone else's browser, or a replay, is refused.
func TestLoginStateBoundAndSingleUse(t *testing.T) {
	h := newHarness(t)
	victim := h.browser()
	attacker := h.browser()

	// The victim has a login binding of their own: they started a login
	// earlier on this site.
	victim.startLogin(returnPage)
	// The attacker starts a login and authorizes as themselves, then sends
	// the callback link to the victim: login CSRF.
	crafted := attacker.authorize(attacker.startLogin(returnPage), sandbox.OpenIDZhangsan)
	resp := victim.get(crafted)
	if st, _ := resp.envelope(t); st != 400 || resp.Header.Get("Location") != "" || victim.sessionCookie() != nil {
		t.Fatalf("foreign nonce: status %d location %q", st, resp.Header.Get("Location"))
	}
	if n := h.sb.Count("sns/oauth2/access_token"); n != 0 {
		t.Fatalf("foreign nonce exchanged the code (%d calls)", n)
	}
	// The refusal did not burn the attacker's own login.
	if resp := attacker.get(crafted); resp.StatusCode != http.StatusFound {
		t.Fatalf("owner's login after a foreign attempt: %d %s", resp.StatusCode, resp.body)
	}
	// Replaying the same callback (back button) is refused, no exchange.
	if st, _ := attacker.get(crafted).envelope(t); st != 400 {
		t.Fatalf("replayed nonce: %d", st)
	}
	if n := h.sb.Count("sns/oauth2/access_token"); n != 1 {
		t.Fatalf("%d code exchanges, want 1", n)
	}
	for _, q := range []string{"", "state=", "code=x&state=nonsense", "code=x&state=AAAAAAAAAAAAAAAAAAAAAAAAAA"} {
		if st, _ := attacker.get("/auth/code?" + q).envelope(t); st != 400 {
			t.Fatalf("/auth/code?%s: %d", q, st)
		}
	}
}

func TestLoginStateExpires(t *testing.T) {
	h := newHarness(t)
	b := h.browser()
	callback := b.authorize(b.startLogin(returnPage), sandbox.OpenIDZhangsan)
	// Badger expires the state by wall clock; simulate by deleting it the
	// way expiry would: waiting 10 minutes is not an option in a test.
	u, _ := url.Parse(callback)
	if _, err := h.app.Sessions().FinishLogin(context.Background(), u.Query().Get("state"), bindingOf(t, b)); err != nil {
		t.Fatal(err)
	}
	if st, _ := b.get(callback).envelope(t); st != 400 {
		t.Fatalf("consumed state accepted: %d", st)
	}
}

func bindingOf(t *testing.T, b *browser) string {
	t.Helper()
	u, _ := url.Parse(b.h.srv.URL)
	for _, c := range b.client.Jar.Cookies(u) {
		if c.Name == b.h.cfg.OAuth.SessionCookie+"_login" {
			return c.Value
		}
	}
	t.Fatal("no binding cookie")
	return ""
}

// A code can be exchanged once: presenting it again, even with a fresh
// login state, gives 401.
func TestCodeReplay(t *testing.T) {
	h := newHarness(t)
	b := h.browser()
	first, _ := url.Parse(b.authorize(b.startLogin(returnPage), sandbox.OpenIDZhangsan))
	if resp := b.get(first.String()); resp.StatusCode != http.StatusFound {
		t.Fatalf("first use %d", resp.StatusCode)
	}
	fresh := b.startLogin(returnPage)
	replay := h.srv.URL + "/auth/code?code=" + url.QueryEscape(first.Query().Get("code")) + "&state=" + fresh.Query().Get("state")
	resp := b.get(replay)
	if st, msg := resp.envelope(t); st != 401 || msg == "" {
		t.Fatalf("replayed code: %d %q", st, msg)
	}
	if strings.Contains(string(resp.body), "40163") {
		t.Fatalf("raw errcode reached the browser: %s", resp.body)
	}
	if !strings.Contains(h.logs.String(), "40163") {
		t.Fatal("raw errcode missing from the log")
	}
	bogus := b.startLogin(returnPage)
	if st, _ := b.get("/auth/code?code=nonsense&state=" + bogus.Query().Get("state")).envelope(t); st != 401 {
		t.Fatalf("unknown code: %d", st)
	}
}

// A session id the browser presents is never adopted, and the session it
// named ends with the new login.
func TestSessionFixation(t *testing.T) {
	h := newHarness(t)
	b := h.browser()
	planted := oauth.NewSecret()
	b.setCookie(h.cfg.OAuth.SessionCookie, planted)
	b.mustLogin(sandbox.OpenIDZhangsan)
	if c := b.sessionCookie(); c == nil || c.Value == planted {
		t.Fatalf("session cookie %v kept the planted id", c)
	}
	other := h.browser()
	other.setCookie(h.cfg.OAuth.SessionCookie, planted)
	if st, _ := other.get("/auth/user/openid").envelope(t); st != 401 {
		t.Fatal("planted id became a session")
	}

	// Logging in again ends the previous session server-side.
	old := b.sessionCookie().Value
	b.mustLogin(sandbox.OpenIDXiaoming)
	if _, err := h.app.Sessions().Lookup(context.Background(), old); !errors.Is(err, oauth.ErrNoSession) {
		t.Fatalf("previous session still alive: %v", err)
	}
	if got := b.get("/auth/user/openid").json(t)["openid"]; got != sandbox.OpenIDXiaoming {
		t.Fatalf("openid %v after re-login", got)
	}
}

func TestForgedAndTamperedCookies(t *testing.T) {
	h := newHarness(t)
	b := h.browser()
	b.mustLogin(sandbox.OpenIDZhangsan)
	real := b.sessionCookie().Value
	flip := []byte(real)
	if flip[0] == 'A' {
		flip[0] = 'B'
	} else {
		flip[0] = 'A'
	}
	for name, value := range map[string]string{
		"random":    oauth.NewSecret(),
		"tampered":  string(flip),
		"truncated": real[:len(real)-1],
		"extended":  real + "A",
		"lowercase": strings.ToLower(real),
		"garbage":   "';DROP TABLE--",
		"openid":    sandbox.OpenIDZhangsan,
	} {
		t.Run(name, func(t *testing.T) {
			f := h.browser()
			f.setCookie(h.cfg.OAuth.SessionCookie, value)
			for _, path := range []string{"/auth/user/openid", "/auth/user", "/offiaccount/user"} {
				if st, msg := f.get(path).envelope(t); st != 401 || msg != "请先登录微信" {
					t.Fatalf("%s: %d %q", path, st, msg)
				}
			}
		})
	}
}

func TestUserTokenRefresh(t *testing.T) {
	t.Run("expired by our clock", func(t *testing.T) {
		h := newHarness(t)
		b := h.browser()
		b.mustLogin(sandbox.OpenIDZhangsan)
		h.clock.Advance(2*time.Hour + time.Minute)
		if resp := b.get("/auth/user"); resp.StatusCode != 200 {
			t.Fatalf("/auth/user after expiry: %d %s", resp.StatusCode, resp.body)
		}
		if n := h.sb.Count("sns/oauth2/refresh_token"); n != 1 {
			t.Fatalf("%d refreshes, want 1", n)
		}
		if n := h.sb.Count("sns/userinfo"); n != 1 {
			t.Fatalf("%d userinfo calls, want 1 (no attempt with the expired token)", n)
		}
		// The refreshed token is stored: no further refresh.
		b.get("/auth/user")
		if n := h.sb.Count("sns/oauth2/refresh_token"); n != 1 {
			t.Fatalf("%d refreshes after a second call, want 1", n)
		}
		if n := h.sb.Count("sns/auth"); n != 0 {
			t.Fatalf("sns/auth called %d times; our clock decides", n)
		}
	})
	t.Run("rejected by WeChat", func(t *testing.T) {
		h := newHarness(t)
		b := h.browser()
		b.mustLogin(sandbox.OpenIDZhangsan)
		h.sb.ExpireTokens()
		if resp := b.get("/auth/user"); resp.StatusCode != 200 {
			t.Fatalf("/auth/user after 42001: %d %s", resp.StatusCode, resp.body)
		}
		if n := h.sb.Count("sns/userinfo"); n != 2 {
			t.Fatalf("%d userinfo calls, want 2", n)
		}
		if n := h.sb.Count("sns/oauth2/refresh_token"); n != 1 {
			t.Fatalf("%d refreshes, want 1", n)
		}
	})
	t.Run("refresh refused ends the session", func(t *testing.T) {
		h := newHarness(t)
		b := h.browser()
		b.mustLogin(sandbox.OpenIDZhangsan)
		h.sb.ExpireTokens()
		h.sb.SetFault("sns/oauth2/refresh_token", sandbox.Fault{Errcode: 40030})
		if st, msg := b.get("/auth/user").envelope(t); st != 401 || msg != "请先登录微信" {
			t.Fatalf("refused refresh: %d %q", st, msg)
		}
		if st, _ := b.get("/auth/user/openid").envelope(t); st != 401 {
			t.Fatal("session survived a refused refresh")
		}
	})
	t.Run("refresh timing out keeps the session", func(t *testing.T) {
		// A deadline the ordinary steps never miss on a busy machine.
		h := newHarness(t, func(c *appliance.Config) { c.WeChat.Timeout = appliance.Duration(time.Second) })
		b := h.browser()
		b.mustLogin(sandbox.OpenIDZhangsan)
		h.sb.ExpireTokens()
		h.sb.SetFault("sns/oauth2/refresh_token", sandbox.Fault{Hang: true, Times: 1})
		if st, msg := b.get("/auth/user").envelope(t); st != 504 || msg != "微信服务器超时" {
			t.Fatalf("hanging refresh: %d %q", st, msg)
		}
		if resp := b.get("/auth/user"); resp.StatusCode != 200 {
			t.Fatalf("after WeChat recovered: %d %s", resp.StatusCode, resp.body)
		}
	})
}

func TestLoginTicket(t *testing.T) {
	h := newHarness(t)
	b := h.browser()
	resp := b.get(b.authorize(b.startLogin(returnPage+"#/r", "ticket", "1"), sandbox.OpenIDXiaoming))
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || resp.StatusCode != http.StatusFound {
		t.Fatalf("login %d %v", resp.StatusCode, err)
	}
	ticket := loc.Query().Get("wx_ticket")
	if !oauth.ValidSecret(ticket) || loc.Query().Get("x") != "1" || loc.Fragment != "/r" || loc.Host != "app.example.com" {
		t.Fatalf("return URL %s", loc)
	}
	login, err := h.app.Sessions().RedeemTicket(context.Background(), ticket)
	if err != nil || login.OpenID != sandbox.OpenIDXiaoming {
		t.Fatalf("redeem: %+v %v", login, err)
	}
	if _, err := h.app.Sessions().RedeemTicket(context.Background(), ticket); !errors.Is(err, oauth.ErrBadTicket) {
		t.Fatalf("second redeem: %v", err)
	}
}

// Behind https (server.base_url), cookies are Secure, and their name and
// path come from the config; redirect_uri is built from base_url.
func TestCookiesFollowConfig(t *testing.T) {
	h := newHarness(t, func(c *appliance.Config) {
		c.Server.BaseURL = "https://wx.example.com/2020/wechat"
		c.OAuth.SessionCookie = "hemc_sid"
		c.OAuth.CookiePath = "/2020/wechat"
		c.OAuth.SessionTTL = appliance.Duration(48 * time.Hour)
	})
	b := h.browser()
	authz := b.startLogin(returnPage)
	if got := authz.Query().Get("redirect_uri"); got != "https://wx.example.com/2020/wechat/auth/code" {
		t.Fatalf("redirect_uri %q", got)
	}
	// The jar will not send Secure cookies over the test's plain HTTP, so
	// the cookies are carried by hand.
	resp := b.get("/auth?state=" + url.QueryEscape(returnPage))
	var binding *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "hemc_sid_login" {
			binding = c
		}
	}
	if binding == nil || !binding.Secure || !binding.HttpOnly || binding.Path != "/2020/wechat" {
		t.Fatalf("binding cookie %+v", binding)
	}
	loc, _ := url.Parse(resp.Header.Get("Location"))
	callback, _ := url.Parse(b.authorize(loc, sandbox.OpenIDZhangsan))
	final := b.get("/auth/code?"+callback.RawQuery, "Cookie", "hemc_sid_login="+binding.Value)
	var sess *http.Cookie
	for _, c := range final.Cookies() {
		if c.Name == "hemc_sid" {
			sess = c
		}
	}
	if final.StatusCode != http.StatusFound || sess == nil {
		t.Fatalf("login %d %s", final.StatusCode, final.body)
	}
	if !sess.Secure || !sess.HttpOnly || sess.SameSite != http.SameSiteLaxMode || sess.Path != "/2020/wechat" || sess.MaxAge != 48*3600 {
		t.Fatalf("session cookie %+v", sess)
	}
	openid := b.get("/auth/user/openid", "Cookie", "hemc_sid="+sess.Value)
	if openid.json(t)["openid"] != sandbox.OpenIDZhangsan {
		t.Fatalf("openid %s", openid.body)
	}
}

// An anonymous client can make /auth store only so many login states: over
// oauth.login_burst it gets 429 in the envelope with Retry-After, while
// another client logs in as usual.
func TestAuthLimitedPerClient(t *testing.T) {
	h := newHarness(t, func(c *appliance.Config) { c.OAuth.LoginRate, c.OAuth.LoginBurst = 60, 5 })
	flood := h.browser()
	start := "/auth?state=" + url.QueryEscape(returnPage)
	for i := range 5 {
		if resp := flood.get(start, "X-Forwarded-For", "203.0.113.66"); resp.StatusCode != http.StatusFound {
			t.Fatalf("request %d within the burst: %d", i, resp.StatusCode)
		}
	}
	over := flood.get(start, "X-Forwarded-For", "203.0.113.66")
	if st, msg := over.envelope(t); st != http.StatusTooManyRequests || msg != "请求过于频繁，请稍后再试" {
		t.Fatalf("over the limit: %d %q", st, msg)
	}
	if ra, err := strconv.Atoi(over.Header.Get("Retry-After")); err != nil || ra < 1 {
		t.Fatalf("Retry-After %q", over.Header.Get("Retry-After"))
	}
	// The client's own X-Forwarded-For entries are not believed: nginx
	// (a trusted proxy) appends the real address last.
	spoof := flood.get(start, "X-Forwarded-For", "198.51.100.1, 203.0.113.66")
	if spoof.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("spoofed header: %d", spoof.StatusCode)
	}
	// Another client (this test's own address, 127.0.0.1) logs in.
	other := h.browser()
	other.mustLogin(sandbox.OpenIDZhangsan)
}

// However many clients ask, at most oauth.max_pending_logins login states
// are stored: beyond it /auth answers 503.
func TestAuthPendingLoginsCapped(t *testing.T) {
	h := newHarness(t, func(c *appliance.Config) { c.OAuth.MaxPendingLogins = 3 })
	start := "/auth?state=" + url.QueryEscape(returnPage)
	for i := range 3 {
		if resp := h.browser().get(start, "X-Forwarded-For", fmt.Sprintf("203.0.113.%d", i)); resp.StatusCode != http.StatusFound {
			t.Fatalf("login %d: %d", i, resp.StatusCode)
		}
	}
	resp := h.browser().get(start, "X-Forwarded-For", "203.0.113.99")
	if st, msg := resp.envelope(t); st != http.StatusServiceUnavailable || msg != "登录请求过多，请稍后重试" {
		t.Fatalf("over the cap: %d %q", st, msg)
	}
	// The window moves on: ten minutes later logins start again.
	h.clock.Advance(11 * time.Minute)
	if resp := h.browser().get(start); resp.StatusCode != http.StatusFound {
		t.Fatalf("after the window: %d", resp.StatusCode)
	}
}

func TestLogout(t *testing.T) {
	h := newHarness(t)
	sessionOf := func(b *browser) string { return b.sessionCookie().Value }

	t.Run("from an allowed origin", func(t *testing.T) {
		b := h.browser()
		b.mustLogin(sandbox.OpenIDZhangsan)
		id := sessionOf(b)
		resp := b.post("/auth/logout", "", "", "Origin", "https://app.example.com")
		if resp.StatusCode != http.StatusNoContent {
			t.Fatalf("logout: %d %s", resp.StatusCode, resp.body)
		}
		var expired bool
		for _, c := range resp.Cookies() {
			expired = expired || c.Name == h.cfg.OAuth.SessionCookie && c.MaxAge < 0
		}
		if !expired {
			t.Fatalf("session cookie not expired: %v", resp.Header["Set-Cookie"])
		}
		// The session is gone on the server, whoever presents its id.
		other := h.browser()
		other.setCookie(h.cfg.OAuth.SessionCookie, id)
		if st, _ := other.get("/auth/user/openid").envelope(t); st != http.StatusUnauthorized {
			t.Fatalf("session after logout: %d", st)
		}
	})
	t.Run("to an allowed return URL", func(t *testing.T) {
		b := h.browser()
		b.mustLogin(sandbox.OpenIDZhangsan)
		resp := b.post("/auth/logout?return="+url.QueryEscape(returnPage), "", "")
		if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != returnPage {
			t.Fatalf("logout with return: %d %q", resp.StatusCode, resp.Header.Get("Location"))
		}
		if st, _ := b.get("/auth/user/openid").envelope(t); st != http.StatusUnauthorized {
			t.Fatalf("still logged in: %d", st)
		}
	})
	t.Run("refused", func(t *testing.T) {
		b := h.browser()
		b.mustLogin(sandbox.OpenIDZhangsan)
		if st, _ := b.post("/auth/logout", "", "", "Origin", "https://evil.example").envelope(t); st != http.StatusForbidden {
			t.Fatalf("foreign origin: %d", st)
		}
		if st, _ := b.post("/auth/logout?return="+url.QueryEscape("https://evil.example/"), "", "").envelope(t); st != http.StatusBadRequest {
			t.Fatalf("foreign return: %d", st)
		}
		if st, _ := b.get("/auth/logout").envelope(t); st != http.StatusMethodNotAllowed {
			t.Fatalf("GET: %d", st)
		}
		// None of these ended the session.
		if got := b.get("/auth/user/openid").json(t)["openid"]; got != sandbox.OpenIDZhangsan {
			t.Fatalf("session ended by a refused logout: %v", got)
		}
	})
	t.Run("without a session", func(t *testing.T) {
		if resp := h.browser().post("/auth/logout", "", ""); resp.StatusCode != http.StatusNoContent {
			t.Fatalf("logout without a session: %d", resp.StatusCode)
		}
	})
}

// A 401 because no cookie arrived at all says so beside the seed's message,
// for the developer whose frontend does not send it.
func TestNoCookieHint(t *testing.T) {
	h := newHarness(t)
	resp := h.browser().get("/auth/user/openid")
	var env struct {
		Status int    `json:"status"`
		Msg    string `json:"msg"`
		Hint   string `json:"hint"`
	}
	if err := json.Unmarshal(resp.body, &env); err != nil {
		t.Fatal(err)
	}
	if env.Status != 401 || env.Msg != "请先登录微信" || !strings.Contains(env.Hint, "no session cookie") {
		t.Fatalf("%+v", env)
	}
	b := h.browser()
	b.setCookie(h.cfg.OAuth.SessionCookie, oauth.NewSecret())
	if strings.Contains(string(b.get("/auth/user/openid").body), "hint") {
		t.Fatal("a cookie for an unknown session is not a missing cookie")
	}
}

// A visitor in WeChat's snapshot mode (a page opened from a share in
// Moments) has a virtual openid: no session, nothing stored, and the page
// learns it with wx_snapshot=1 so it can ask for the full page.
func TestSnapshotVisitorGetsNoSession(t *testing.T) {
	h := newHarness(t)
	b := h.browser()
	resp := b.login(sandbox.OpenIDSnapshot)
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("/auth/code: %d %s", resp.StatusCode, resp.body)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || loc.Query().Get("wx_snapshot") != "1" || loc.Host != "app.example.com" || loc.Query().Get("x") != "1" {
		t.Fatalf("redirect %q, want the return page with wx_snapshot=1", resp.Header.Get("Location"))
	}
	for _, c := range resp.Cookies() {
		if c.Name == h.cfg.OAuth.SessionCookie {
			t.Fatalf("snapshot visitor got a session cookie: %v", c)
		}
	}
	if st, _ := b.get("/auth/user/openid").envelope(t); st != http.StatusUnauthorized {
		t.Fatalf("snapshot visitor logged in: %d", st)
	}
	// A real login afterwards, from the full page, works as usual.
	b.mustLogin(sandbox.OpenIDZhangsan)
}
