package sandbox

import (
	"bytes"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestAuthorizePage(t *testing.T) {
	e := newEnv(t)
	a := e.do("GET", "connect/oauth2/authorize?"+authorizeQuery("https://app.example/cb?x=1", "snsapi_userinfo", "abc123"), "")
	if a.Status != http.StatusOK {
		t.Fatalf("status %d: %s", a.Status, a.Body)
	}
	if ct := a.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("Content-Type %q", ct)
	}
	page := string(a.Body)
	for _, u := range users {
		re := regexp.MustCompile(`<a class="btn" id="user-` + regexp.QuoteMeta(u.OpenID) + `" data-openid="` +
			regexp.QuoteMeta(u.OpenID) + `" href="([^"]+)">以 ([^<]+) 身份授权</a>`)
		m := re.FindStringSubmatch(page)
		if m == nil {
			t.Fatalf("no link for %s in page:\n%s", u.OpenID, page)
		}
		if name := html.UnescapeString(m[2]); name != u.Nickname {
			t.Errorf("link text %q, want %q", name, u.Nickname)
		}
		href := html.UnescapeString(m[1])
		if !strings.HasPrefix(href, "authorize/confirm?") {
			t.Errorf("link %q is not relative to the page", href)
		}
		// Following the link from the page's URL reaches confirm with the
		// same parameters in WeChat's order.
		pageURL, _ := url.Parse(e.srv.URL + "/connect/oauth2/authorize?x")
		target, err := pageURL.Parse(href)
		if err != nil {
			t.Fatal(err)
		}
		if target.Path != "/connect/oauth2/authorize/confirm" || !inAuthOrder(target.RawQuery) ||
			target.Query().Get("openid") != u.OpenID || target.Query().Get("redirect_uri") != "https://app.example/cb?x=1" {
			t.Errorf("link resolves to %s", target)
		}
	}
	if !strings.Contains(page, `id="deny"`) || !strings.Contains(page, "拒绝授权") {
		t.Error("no refuse link")
	}
	// The markup in a nickname is escaped, not interpreted.
	if strings.Contains(page, "<b>&</b>") {
		t.Error("nickname markup was not escaped")
	}
}

func TestAuthorizeValidation(t *testing.T) {
	e := newEnv(t)
	cb := url.QueryEscape("https://app.example/cb")
	for _, tc := range []struct {
		name, query string
		code        string // data-errcode on the error page
	}{
		{"order", "redirect_uri=" + cb + "&appid=" + DefaultAppID + "&response_type=code&scope=snsapi_base&state=a", "0"},
		{"order of scope", "appid=" + DefaultAppID + "&redirect_uri=" + cb + "&scope=snsapi_base&response_type=code&state=a", "0"},
		{"state first", "state=a&appid=" + DefaultAppID + "&redirect_uri=" + cb + "&response_type=code&scope=snsapi_base", "0"},
		{"state after extra", "appid=" + DefaultAppID + "&redirect_uri=" + cb + "&response_type=code&scope=snsapi_base&x=1&state=a", "0"},
		{"bad appid", "appid=wxother&redirect_uri=" + cb + "&response_type=code&scope=snsapi_base&state=a", "40013"},
		{"no appid", "redirect_uri=" + cb + "&response_type=code&scope=snsapi_base&state=a", "10012"},
		{"no redirect", "appid=" + DefaultAppID + "&response_type=code&scope=snsapi_base&state=a", "10011"},
		{"relative redirect", "appid=" + DefaultAppID + "&redirect_uri=%2Fcb&response_type=code&scope=snsapi_base&state=a", "10003"},
		{"ftp redirect", "appid=" + DefaultAppID + "&redirect_uri=ftp%3A%2F%2Fx%2F&response_type=code&scope=snsapi_base&state=a", "10003"},
		{"response_type", "appid=" + DefaultAppID + "&redirect_uri=" + cb + "&response_type=token&scope=snsapi_base&state=a", "0"},
		{"scope", "appid=" + DefaultAppID + "&redirect_uri=" + cb + "&response_type=code&scope=snsapi_login&state=a", "10005"},
		{"no scope", "appid=" + DefaultAppID + "&redirect_uri=" + cb + "&response_type=code&state=a", "10010"},
		{"state chars", "appid=" + DefaultAppID + "&redirect_uri=" + cb + "&response_type=code&scope=snsapi_base&state=a-b", "0"},
		{"state length", "appid=" + DefaultAppID + "&redirect_uri=" + cb + "&response_type=code&scope=snsapi_base&state=" + strings.Repeat("a", 129), "0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, path := range []string{"connect/oauth2/authorize", "connect/oauth2/authorize/confirm"} {
				q := tc.query
				if strings.HasSuffix(path, "confirm") {
					q += "&openid=" + OpenIDZhangsan
				}
				a := e.do("GET", path+"?"+q, "")
				if a.Status != http.StatusBadRequest {
					t.Fatalf("%s: status %d, want 400", path, a.Status)
				}
				if !bytes.Contains(a.Body, []byte(`data-errcode="`+tc.code+`"`)) {
					t.Fatalf("%s: want errcode %s in page:\n%s", path, tc.code, a.Body)
				}
			}
		})
	}
	if !strings.Contains(string(e.do("GET", "connect/oauth2/authorize?"+
		"redirect_uri="+cb+"&appid="+DefaultAppID+"&response_type=code&scope=snsapi_base", "").Body), "参数顺序错误") {
		t.Error("order error page does not say so")
	}
	for _, q := range []string{
		authorizeQuery("https://app.example/cb", "snsapi_base", strings.Repeat("Z9", 64)),
		"appid=" + DefaultAppID + "&redirect_uri=" + cb + "&response_type=code&scope=snsapi_base",                     // no state
		"appid=" + DefaultAppID + "&redirect_uri=" + cb + "&response_type=code&scope=snsapi_base&state=&forcePopup=1", // empty state, extra param
	} {
		if a := e.do("GET", "connect/oauth2/authorize?"+q, ""); a.Status != http.StatusOK {
			t.Errorf("%s: status %d, want 200", q, a.Status)
		}
	}
}

func TestConfirmRedirect(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		redirect string
		want     *regexp.Regexp
	}{
		{"https://app.example/cb", regexp.MustCompile(`^https://app\.example/cb\?code=[0-9a-f]{32}&state=st8$`)},
		{"https://app.example/cb?next=%2Fhome&a=1", regexp.MustCompile(`^https://app\.example/cb\?next=%2Fhome&a=1&code=[0-9a-f]{32}&state=st8$`)},
		{"https://app.example/cb?", regexp.MustCompile(`^https://app\.example/cb\?code=[0-9a-f]{32}&state=st8$`)},
		{"http://app.example/#/login", regexp.MustCompile(`^http://app\.example/\?code=[0-9a-f]{32}&state=st8#/login$`)},
	} {
		a := e.do("GET", "connect/oauth2/authorize/confirm?"+authorizeQuery(tc.redirect, "snsapi_base", "st8")+"&openid="+OpenIDLisi, "")
		if a.Status != http.StatusFound {
			t.Fatalf("status %d: %s", a.Status, a.Body)
		}
		if loc := a.Header.Get("Location"); !tc.want.MatchString(loc) {
			t.Errorf("redirect_uri %s: Location %q", tc.redirect, loc)
		}
	}
	deny := e.do("GET", "connect/oauth2/authorize/confirm?"+authorizeQuery("https://app.example/cb?a=1", "snsapi_userinfo", "st9")+"&deny=1", "")
	if loc := deny.Header.Get("Location"); deny.Status != http.StatusFound || loc != "https://app.example/cb?a=1&state=st9" {
		t.Errorf("deny: status %d Location %q", deny.Status, loc)
	}
	unknown := e.do("GET", "connect/oauth2/authorize/confirm?"+authorizeQuery("https://app.example/cb", "snsapi_base", "s")+"&openid=oSBX_nobody", "")
	if unknown.Status != http.StatusBadRequest {
		t.Errorf("unknown openid: status %d", unknown.Status)
	}
}

func codeQuery(code string) url.Values {
	return url.Values{
		"appid": {DefaultAppID}, "secret": {DefaultAppSecret}, "code": {code}, "grant_type": {"authorization_code"},
	}
}

func TestSNSAccessToken(t *testing.T) {
	e := newEnv(t)
	code := e.code(OpenIDZhangsan, "snsapi_userinfo")
	a := e.get("sns/oauth2/access_token", codeQuery(code))
	m := a.json(t)
	if m["openid"] != OpenIDZhangsan || m["scope"] != "snsapi_userinfo" || m["expires_in"] != float64(7200) {
		t.Fatalf("answer: %s", a.Body)
	}
	if !strings.HasPrefix(m["access_token"].(string), "SBXut.") || !strings.HasPrefix(m["refresh_token"].(string), "SBXrt.") {
		t.Fatalf("token kinds: %s", a.Body)
	}
	if m["unionid"] != "oSBXu_zhangsan" {
		t.Errorf("unionid %v", m["unionid"])
	}

	wantErr(t, e.get("sns/oauth2/access_token", codeQuery(code)), 40163)
	wantErr(t, e.get("sns/oauth2/access_token", codeQuery("0123456789abcdef0123456789abcdef")), 40029)

	old := e.code(OpenIDZhangsan, "snsapi_base")
	e.clock.Advance(5*time.Minute + time.Second)
	wantErr(t, e.get("sns/oauth2/access_token", codeQuery(old)), 40029)

	fresh := e.code(OpenIDZhangsan, "snsapi_base")
	q := codeQuery(fresh)
	q.Set("secret", "nope")
	wantErr(t, e.get("sns/oauth2/access_token", q), 40125)
	q = codeQuery(fresh)
	q.Set("appid", "wxother")
	wantErr(t, e.get("sns/oauth2/access_token", q), 40013)
	q = codeQuery(fresh)
	q.Del("code")
	wantErr(t, e.get("sns/oauth2/access_token", q), 41008)
	q = codeQuery(fresh)
	q.Set("grant_type", "client_credential")
	wantErr(t, e.get("sns/oauth2/access_token", q), 40002)

	// The failed attempts did not consume the code.
	base := e.get("sns/oauth2/access_token", codeQuery(fresh)).json(t)
	if base["scope"] != "snsapi_base" || base["unionid"] != nil {
		t.Fatalf("base scope answer: %v", base)
	}
}

func TestSNSRefresh(t *testing.T) {
	e := newEnv(t)
	m := e.snsTokens(OpenIDAhua, "snsapi_userinfo")
	rt := m["refresh_token"].(string)
	q := url.Values{"appid": {DefaultAppID}, "grant_type": {"refresh_token"}, "refresh_token": {rt}}

	e.clock.Advance(3 * time.Hour) // the access token has expired
	wantErr(t, e.get("sns/auth", url.Values{"access_token": {m["access_token"].(string)}, "openid": {OpenIDAhua}}), 42001)

	r := e.get("sns/oauth2/refresh_token", q).json(t)
	if r["refresh_token"] != rt || r["openid"] != OpenIDAhua || r["scope"] != "snsapi_userinfo" || r["access_token"] == m["access_token"] {
		t.Fatalf("refresh answer: %v", r)
	}
	if a := e.get("sns/auth", url.Values{"access_token": {r["access_token"].(string)}, "openid": {OpenIDAhua}}); a.errcode(t) != 0 {
		t.Fatalf("refreshed token: %s", a.Body)
	}

	bad := url.Values{"appid": {DefaultAppID}, "grant_type": {"refresh_token"}, "refresh_token": {"garbage"}}
	wantErr(t, e.get("sns/oauth2/refresh_token", bad), 40030)
	bad.Set("refresh_token", m["access_token"].(string)) // an access token is not a refresh token
	wantErr(t, e.get("sns/oauth2/refresh_token", bad), 40030)
	bad.Del("refresh_token")
	wantErr(t, e.get("sns/oauth2/refresh_token", bad), 41003)

	e.clock.Advance(30 * 24 * time.Hour)
	wantErr(t, e.get("sns/oauth2/refresh_token", q), 42002)
}

func TestSNSAuth(t *testing.T) {
	e := newEnv(t)
	m := e.snsTokens(OpenIDZhangsan, "snsapi_base")
	tok := m["access_token"].(string)
	ok := e.get("sns/auth", url.Values{"access_token": {tok}, "openid": {OpenIDZhangsan}})
	if j := ok.json(t); j["errcode"] != float64(0) || j["errmsg"] != "ok" {
		t.Fatalf("sns/auth: %s", ok.Body)
	}
	wantErr(t, e.get("sns/auth", url.Values{"access_token": {tok}, "openid": {OpenIDLisi}}), 40003)
	wantErr(t, e.get("sns/auth", url.Values{"access_token": {"x" + tok}, "openid": {OpenIDZhangsan}}), 40001)
	wantErr(t, e.get("sns/auth", url.Values{"access_token": {e.appToken()}, "openid": {OpenIDZhangsan}}), 40001)
	e.clock.Advance(2*time.Hour + time.Second)
	wantErr(t, e.get("sns/auth", url.Values{"access_token": {tok}, "openid": {OpenIDZhangsan}}), 42001)
}

func TestSNSUserinfo(t *testing.T) {
	e := newEnv(t)
	for _, u := range users {
		m := e.snsTokens(u.OpenID, "snsapi_userinfo")
		a := e.get("sns/userinfo", url.Values{"access_token": {m["access_token"].(string)}, "openid": {u.OpenID}, "lang": {"zh_CN"}})
		if ct := a.Header.Get("Content-Type"); ct != "application/json; encoding=utf-8" {
			t.Errorf("Content-Type %q", ct)
		}
		j := a.json(t)
		if j["nickname"] != u.Nickname || j["openid"] != u.OpenID || j["city"] != u.City || j["sex"] != float64(u.Sex) {
			t.Errorf("userinfo %s: %s", u.OpenID, a.Body)
		}
		if p, ok := j["privilege"].([]any); !ok || len(p) != 0 {
			t.Errorf("privilege: %v", j["privilege"])
		}
		if img, _ := j["headimgurl"].(string); img != e.srv.URL+"/"+u.HeadImgURL {
			t.Errorf("headimgurl %q", img)
		}
		// Raw UTF-8, as WeChat sends it: no \u escapes, no HTML escaping.
		if bytes.Contains(a.Body, []byte(`\u`)) {
			t.Errorf("escaped characters in %s", a.Body)
		}
		if !bytes.Contains(a.Body, []byte(`"nickname":`+string(marshal(u.Nickname)))) {
			t.Errorf("nickname not raw in %s", a.Body)
		}
	}
	// The exact bytes of the emoji and of the private-use code point.
	m := e.snsTokens(OpenIDXiaoming, "snsapi_userinfo")
	body := e.get("sns/userinfo", url.Values{"access_token": {m["access_token"].(string)}, "openid": {OpenIDXiaoming}}).Body
	if !bytes.Contains(body, []byte("\xe5\xb0\x8f\xe6\x98\x8e\xf0\x9f\x98\x80")) {
		t.Errorf("emoji bytes missing: %q", body)
	}
	m = e.snsTokens(OpenIDAhua, "snsapi_userinfo")
	body = e.get("sns/userinfo", url.Values{"access_token": {m["access_token"].(string)}, "openid": {OpenIDAhua}}).Body
	if !bytes.Contains(body, []byte("\xee\x90\x95")) {
		t.Errorf("U+E415 bytes missing: %q", body)
	}
	if !bytes.Contains(body, []byte(`"province":"浙江"`)) {
		t.Errorf("province not raw UTF-8: %s", body)
	}

	base := e.snsTokens(OpenIDZhangsan, "snsapi_base")
	wantErr(t, e.get("sns/userinfo", url.Values{"access_token": {base["access_token"].(string)}, "openid": {OpenIDZhangsan}}), 48001)
	full := e.snsTokens(OpenIDZhangsan, "snsapi_userinfo")
	wantErr(t, e.get("sns/userinfo", url.Values{"access_token": {full["access_token"].(string)}, "openid": {OpenIDXiaoming}}), 40003)
	wantErr(t, e.get("sns/userinfo", url.Values{"openid": {OpenIDZhangsan}}), 41001)
	wantErr(t, e.get("sns/userinfo", url.Values{"access_token": {full["access_token"].(string)}}), 41009)
}

func TestInAuthOrder(t *testing.T) {
	for raw, want := range map[string]bool{
		"appid=a&redirect_uri=b&response_type=code&scope=s&state=x":            true,
		"appid=a&redirect_uri=b&response_type=code&scope=s":                    true,
		"appid=a&redirect_uri=b&response_type=code&scope=s&state=x&openid=o":   true,
		"appid=a&redirect_uri=b&response_type=code&scope=s&openid=o":           true,
		"appid=a&redirect_uri=b&response_type=code&scope=s&openid=o&state=x":   false,
		"appid=a&response_type=code&redirect_uri=b&scope=s&state=x":            false,
		"%61ppid=a&redirect_uri=b&response_type=code&scope=s&state=x":          true,
		"appid=a&redirect_uri=b&response_type=code":                            false,
		"redirect_uri=b&appid=a&response_type=code&scope=s&state=x&appid=a":    false,
		"appid=a&&redirect_uri=b&response_type=code&scope=s&state=x":           true,
		"appid=a&redirect_uri=b&response_type=code&scope=s&state=x&state=y":    true,
		"appid=a&redirect_uri=b&response_type=code&scope=s&scope=t&state=x":    false,
		"appid=a&redirect_uri=b&response_type=code&scope=s&forcePopup=true&x=": true,
	} {
		if got := inAuthOrder(raw); got != want {
			t.Errorf("inAuthOrder(%q) = %v, want %v", raw, got, want)
		}
	}
}
