package sandbox

import (
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestTokenSuccess(t *testing.T) {
	e := newEnv(t)
	a := e.get("cgi-bin/token", url.Values{
		"grant_type": {"client_credential"}, "appid": {DefaultAppID}, "secret": {DefaultAppSecret},
	})
	if ct := a.Header.Get("Content-Type"); ct != "text/plain" {
		t.Errorf("Content-Type %q, want text/plain", ct)
	}
	m := a.json(t)
	tok, _ := m["access_token"].(string)
	if !strings.HasPrefix(tok, "SBXat.") || len(tok) >= 512 {
		t.Errorf("access_token %q: want SBXat. prefix and < 512 chars", tok)
	}
	if m["expires_in"] != float64(7200) {
		t.Errorf("expires_in %v, want 7200", m["expires_in"])
	}
	if _, ok := m["errcode"]; ok {
		t.Errorf("success answer has errcode: %s", a.Body)
	}
	if tok2 := e.appToken(); tok2 == tok {
		t.Error("second cgi-bin/token call returned the same token")
	}
}

func TestTokenErrors(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		name  string
		query string
		code  int
	}{
		{"bad grant_type", "grant_type=password&appid=" + DefaultAppID + "&secret=" + DefaultAppSecret, 40002},
		{"no appid", "grant_type=client_credential&secret=" + DefaultAppSecret, 41002},
		{"no secret", "grant_type=client_credential&appid=" + DefaultAppID, 41004},
		{"bad appid", "grant_type=client_credential&appid=wxother&secret=" + DefaultAppSecret, 40013},
		{"bad secret", "grant_type=client_credential&appid=" + DefaultAppID + "&secret=nope", 40125},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := e.do("GET", "cgi-bin/token?"+tc.query, "")
			wantErr(t, a, tc.code)
			if ct := a.Header.Get("Content-Type"); ct != "text/plain" {
				t.Errorf("Content-Type %q, want text/plain", ct)
			}
		})
	}
}

func TestAPITokenChecks(t *testing.T) {
	e := newEnv(t)
	tok := e.appToken()
	other := New(Options{AppSecret: "another-secret", Now: e.clock.Now})
	foreign, _ := other.issueLocked(claims{Kind: kindApp}, time.Hour)

	// Flip one character of the payload, keeping the signature.
	parts := strings.Split(tok, ".")
	p := []byte(parts[1])
	p[5] ^= 1
	tampered := parts[0] + "." + string(p) + "." + parts[2]

	for _, tc := range []struct {
		name, tok string
		code      int
	}{
		{"missing", "", 41001},
		{"garbage", "not-a-token", 40001},
		{"tampered", tampered, 40001},
		{"other secret", foreign, 40001},
		{"sns token", e.snsTokens(OpenIDZhangsan, "snsapi_userinfo")["access_token"].(string), 40001},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantErr(t, e.userInfo(tc.tok, OpenIDZhangsan), tc.code)
		})
	}
	if code := e.userInfo(tok, OpenIDZhangsan).errcode(t); code != 0 {
		t.Fatalf("valid token: errcode %d", code)
	}
}

func TestTokenExpiresAfterTTL(t *testing.T) {
	e := newEnv(t)
	tok := e.appToken()
	e.clock.Advance(7199 * time.Second)
	if code := e.userInfo(tok, OpenIDZhangsan).errcode(t); code != 0 {
		t.Fatalf("before TTL: errcode %d", code)
	}
	e.clock.Advance(2 * time.Second)
	wantErr(t, e.userInfo(tok, OpenIDZhangsan), 42001)
}

func TestTokenTTLOption(t *testing.T) {
	c := newClock()
	sb := New(Options{TokenTTL: time.Minute, Now: c.Now})
	srv := httptest.NewServer(sb)
	defer srv.Close()
	e := &env{t: t, sb: sb, srv: srv, clock: c}
	a := e.get("cgi-bin/token", url.Values{
		"grant_type": {"client_credential"}, "appid": {DefaultAppID}, "secret": {DefaultAppSecret},
	})
	m := a.json(t)
	if m["expires_in"] != float64(60) {
		t.Fatalf("expires_in %v, want 60", m["expires_in"])
	}
	c.Advance(61 * time.Second)
	wantErr(t, e.userInfo(m["access_token"].(string), OpenIDZhangsan), 42001)
}

func TestTokenOverlap(t *testing.T) {
	e := newEnv(t)
	old := e.appToken()
	e.clock.Advance(time.Minute)
	cur := e.appToken()
	e.clock.Advance(4 * time.Minute)
	if code := e.userInfo(old, OpenIDZhangsan).errcode(t); code != 0 {
		t.Fatalf("old token within 5 minutes of replacement: errcode %d", code)
	}
	e.clock.Advance(time.Minute + time.Second)
	wantErr(t, e.userInfo(old, OpenIDZhangsan), 40001)
	if code := e.userInfo(cur, OpenIDZhangsan).errcode(t); code != 0 {
		t.Fatalf("current token: errcode %d", code)
	}
}

func TestTokenOverlapFrozenClock(t *testing.T) {
	// Tokens issued in the same instant must still be ordered.
	e := newEnv(t)
	old := e.appToken()
	cur := e.appToken()
	e.clock.Advance(5*time.Minute + time.Second)
	wantErr(t, e.userInfo(old, OpenIDZhangsan), 40001)
	if code := e.userInfo(cur, OpenIDZhangsan).errcode(t); code != 0 {
		t.Fatalf("current token: errcode %d", code)
	}
}

func TestExpireTokens(t *testing.T) {
	e := newEnv(t)
	app := e.appToken()
	sns := e.snsTokens(OpenIDZhangsan, "snsapi_userinfo")
	ticket := e.get("cgi-bin/ticket/getticket", url.Values{"access_token": {app}, "type": {"jsapi"}}).json(t)["ticket"]

	e.sb.ExpireTokens()

	wantErr(t, e.userInfo(app, OpenIDZhangsan), 42001)
	wantErr(t, e.get("sns/userinfo", url.Values{
		"access_token": {sns["access_token"].(string)}, "openid": {OpenIDZhangsan},
	}), 42001)

	// New credentials work at once, even with the clock frozen.
	fresh := e.appToken()
	if code := e.userInfo(fresh, OpenIDZhangsan).errcode(t); code != 0 {
		t.Fatalf("token issued after ExpireTokens: errcode %d", code)
	}
	// The cached ticket was expired too: a new one is issued.
	if t2 := e.get("cgi-bin/ticket/getticket", url.Values{"access_token": {fresh}, "type": {"jsapi"}}).json(t)["ticket"]; t2 == ticket {
		t.Error("getticket returned the expired ticket")
	}
	// Refresh tokens survive.
	a := e.get("sns/oauth2/refresh_token", url.Values{
		"appid": {DefaultAppID}, "grant_type": {"refresh_token"}, "refresh_token": {sns["refresh_token"].(string)},
	})
	if a.errcode(t) != 0 || a.json(t)["access_token"] == nil {
		t.Fatalf("refresh after ExpireTokens: %s", a.Body)
	}
}

func TestTokensSurviveRestart(t *testing.T) {
	e := newEnv(t)
	app := e.appToken()
	sns := e.snsTokens(OpenIDXiaoming, "snsapi_userinfo")
	e.clock.Advance(time.Hour)

	// The appliance restarts: a new Sandbox with the same options.
	sb2 := New(e.opts)
	srv2 := httptest.NewServer(sb2)
	defer srv2.Close()
	e2 := &env{t: t, sb: sb2, srv: srv2, clock: e.clock}

	if code := e2.userInfo(app, OpenIDZhangsan).errcode(t); code != 0 {
		t.Fatalf("app token after restart: errcode %d", code)
	}
	a := e2.get("sns/userinfo", url.Values{"access_token": {sns["access_token"].(string)}, "openid": {OpenIDXiaoming}})
	if a.json(t)["nickname"] != NicknameXiaoming {
		t.Fatalf("sns token after restart: %s", a.Body)
	}
	// A sandbox with another secret does not accept them.
	sb3 := New(Options{AppSecret: "rotated", Now: e.clock.Now})
	srv3 := httptest.NewServer(sb3)
	defer srv3.Close()
	e3 := &env{t: t, sb: sb3, srv: srv3, clock: e.clock}
	wantErr(t, e3.userInfo(app, OpenIDZhangsan), 40001)
}

func TestStableToken(t *testing.T) {
	e := newEnv(t)
	body := `{"grant_type":"client_credential","appid":"` + DefaultAppID + `","secret":"` + DefaultAppSecret + `"}`
	first := e.post("cgi-bin/stable_token", nil, body)
	if ct := first.Header.Get("Content-Type"); ct != "text/plain" {
		t.Errorf("Content-Type %q, want text/plain", ct)
	}
	tok, _ := first.json(t)["access_token"].(string)
	if !strings.HasPrefix(tok, "SBXst.") {
		t.Fatalf("stable token %q", tok)
	}
	e.clock.Advance(100 * time.Second)
	second := e.post("cgi-bin/stable_token", nil, body).json(t)
	if second["access_token"] != tok {
		t.Fatal("stable_token did not return the same token while valid")
	}
	if second["expires_in"] != float64(7100) {
		t.Errorf("expires_in %v, want the remaining 7100", second["expires_in"])
	}
	// cgi-bin/token does not disturb stable tokens.
	e.appToken()
	e.clock.Advance(10 * time.Minute)
	if code := e.userInfo(tok, OpenIDZhangsan).errcode(t); code != 0 {
		t.Fatalf("stable token after cgi-bin/token: errcode %d", code)
	}

	forced := e.post("cgi-bin/stable_token", nil, strings.Replace(body, "}", `,"force_refresh":true}`, 1)).json(t)
	if forced["access_token"] == tok || forced["expires_in"] != float64(7200) {
		t.Fatalf("force_refresh: %v", forced)
	}
	e.clock.Advance(5*time.Minute + time.Second)
	wantErr(t, e.userInfo(tok, OpenIDZhangsan), 40001)

	// After expiry a new one is issued.
	e.clock.Advance(2 * time.Hour)
	if again := e.post("cgi-bin/stable_token", nil, body).json(t); again["access_token"] == forced["access_token"] {
		t.Fatal("stable_token returned an expired token")
	}

	wantErr(t, e.post("cgi-bin/stable_token", nil, `{"grant_type":`), 47001)
	wantErr(t, e.post("cgi-bin/stable_token", nil, strings.Replace(body, DefaultAppSecret, "nope", 1)), 40125)
	wantErr(t, e.get("cgi-bin/stable_token", nil), 43002)
}

func TestGetTicket(t *testing.T) {
	e := newEnv(t)
	tok := e.appToken()
	q := url.Values{"access_token": {tok}, "type": {"jsapi"}}
	a := e.get("cgi-bin/ticket/getticket", q)
	if ct := a.Header.Get("Content-Type"); ct != "text/plain" {
		t.Errorf("Content-Type %q, want text/plain", ct)
	}
	m := a.json(t)
	if m["errcode"] != float64(0) || m["errmsg"] != "ok" || m["expires_in"] != float64(7200) {
		t.Fatalf("getticket: %s", a.Body)
	}
	ticket, _ := m["ticket"].(string)
	if !strings.HasPrefix(ticket, "SBXjt.") || len(ticket) >= 512 {
		t.Fatalf("ticket %q", ticket)
	}
	e.clock.Advance(time.Minute)
	// Another access token gets the same ticket while it is valid.
	m2 := e.get("cgi-bin/ticket/getticket", url.Values{"access_token": {e.appToken()}, "type": {"jsapi"}}).json(t)
	if m2["ticket"] != ticket || m2["expires_in"] != float64(7140) {
		t.Fatalf("second getticket: %v", m2)
	}
	if card := e.get("cgi-bin/ticket/getticket", url.Values{"access_token": {tok}, "type": {"wx_card"}}).json(t); card["ticket"] == ticket {
		t.Error("wx_card ticket equals the jsapi ticket")
	}
	e.clock.Advance(2 * time.Hour)
	if m3 := e.get("cgi-bin/ticket/getticket", url.Values{"access_token": {e.appToken()}, "type": {"jsapi"}}).json(t); m3["ticket"] == ticket {
		t.Fatal("getticket returned an expired ticket")
	}

	wantErr(t, e.get("cgi-bin/ticket/getticket", url.Values{"access_token": {e.appToken()}, "type": {"bogus"}}), 40097)
	wantErr(t, e.get("cgi-bin/ticket/getticket", url.Values{"type": {"jsapi"}}), 41001)
	wantErr(t, e.get("cgi-bin/ticket/getticket", url.Values{"access_token": {tok}, "type": {"jsapi"}}), 42001)
}

func TestCredentialKindsAreDistinct(t *testing.T) {
	sg := newSigner(DefaultAppID, DefaultAppSecret)
	tok := sg.sign(claims{Kind: kindUser, AppID: DefaultAppID, OpenID: OpenIDZhangsan, Exp: 1})
	if _, ok := sg.parse(tok, kindRefresh); ok {
		t.Fatal("a user token parsed as a refresh token")
	}
	if c, ok := sg.parse(tok, kindUser); !ok || c.OpenID != OpenIDZhangsan {
		t.Fatalf("parse: %v %v", c, ok)
	}
	// Swapping the prefix breaks the signature.
	if _, ok := sg.parse("SBXrt"+strings.TrimPrefix(tok, "SBXut"), kindRefresh); ok {
		t.Fatal("a re-prefixed token was accepted")
	}
}
