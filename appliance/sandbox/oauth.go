package sandbox

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"net/url"
	"strings"
)

// authParams are the validated parameters of connect/oauth2/authorize.
type authParams struct {
	RedirectURI string
	Scope       string
	State       string
	HasState    bool
}

// authOrder is the parameter order WeChat insists on: it matches the raw
// query with a pattern, so a correct set of parameters in another order
// fails in production even though any URL parser would accept it.
var authOrder = []string{"appid", "redirect_uri", "response_type", "scope", "state"}

// authError is a failed authorize request, shown as an HTML page.
type authError struct {
	Code int // WeChat's page error code, 0 when WeChat shows none
	Msg  string
}

// parseAuthorize validates an authorize (or confirm) request like WeChat.
func (s *Sandbox) parseAuthorize(r *http.Request) (authParams, *authError) {
	var p authParams
	q := r.URL.Query()
	switch {
	case q.Get("appid") == "":
		return p, &authError{10012, "appid 不能为空 (appid is empty)"}
	case q.Get("redirect_uri") == "":
		return p, &authError{10011, "redirect_uri 不能为空 (redirect_uri is empty)"}
	case q.Get("scope") == "":
		return p, &authError{10010, "scope 不能为空 (scope is empty)"}
	}
	if !inAuthOrder(r.URL.RawQuery) {
		return p, &authError{0, "参数顺序错误：必须依次为 appid、redirect_uri、response_type、scope、state " +
			"(parameters must come in the order appid, redirect_uri, response_type, scope, state)"}
	}
	if q.Get("appid") != s.appID {
		return p, &authError{40013, "appid 参数错误 (invalid appid)"}
	}
	if q.Get("response_type") != "code" {
		return p, &authError{0, "response_type 参数错误，必须为 code (response_type must be code)"}
	}
	p.RedirectURI = q.Get("redirect_uri")
	if u, err := url.Parse(p.RedirectURI); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return p, &authError{10003, "redirect_uri 参数错误 (redirect_uri must be an absolute http(s) URL)"}
	}
	p.Scope = q.Get("scope")
	if p.Scope != "snsapi_base" && p.Scope != "snsapi_userinfo" {
		return p, &authError{10005, "此公众号并没有这些 scope 的权限 (scope must be snsapi_base or snsapi_userinfo)"}
	}
	p.State = q.Get("state")
	_, p.HasState = q["state"]
	if !validState(p.State) {
		return p, &authError{0, "state 参数错误：只能包含 a-zA-Z0-9，最多 128 字节 (state: at most 128 bytes of a-zA-Z0-9)"}
	}
	return p, nil
}

// inAuthOrder reports whether raw starts with authOrder's keys in order;
// state is optional and extra parameters may follow.
func inAuthOrder(raw string) bool {
	var keys []string
	for part := range strings.SplitSeq(raw, "&") {
		if part == "" {
			continue
		}
		k, _, _ := strings.Cut(part, "=")
		if uk, err := url.QueryUnescape(k); err == nil {
			k = uk
		}
		keys = append(keys, k)
	}
	for i, want := range authOrder {
		if i >= len(keys) {
			return want == "state" // everything required came first
		}
		if keys[i] != want {
			return want == "state" && !containsAt(keys, "state", i)
		}
	}
	return true
}

// containsAt reports whether key occurs in keys at index from or later.
func containsAt(keys []string, key string, from int) bool {
	for _, k := range keys[from:] {
		if k == key {
			return true
		}
	}
	return false
}

func validState(st string) bool {
	if len(st) > 128 {
		return false
	}
	for _, c := range []byte(st) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

// query rebuilds the authorize query in WeChat's order, for the links of
// the authorization page.
func (p authParams) query(appID string) string {
	q := "appid=" + url.QueryEscape(appID) +
		"&redirect_uri=" + url.QueryEscape(p.RedirectURI) +
		"&response_type=code&scope=" + url.QueryEscape(p.Scope)
	if p.HasState {
		q += "&state=" + p.State
	}
	return q
}

// handleAuthorize serves GET connect/oauth2/authorize: instead of a
// WeChat client's consent screen, a page to pick which test user is at the
// browser.
func (s *Sandbox) handleAuthorize(w http.ResponseWriter, r *http.Request) {
	p, aerr := s.parseAuthorize(r)
	if aerr != nil {
		s.authErrorPage(w, aerr)
		return
	}
	base := p.query(s.appID)
	page := authorizePage{Scope: p.Scope, RedirectURI: p.RedirectURI, Deny: "authorize/confirm?" + base + "&deny=1",
		Snapshot: "authorize/confirm?" + base + "&openid=" + OpenIDSnapshot}
	for _, u := range users {
		page.Users = append(page.Users, authorizeUser{
			User: u,
			Link: "authorize/confirm?" + base + "&openid=" + url.QueryEscape(u.OpenID),
		})
	}
	renderPage(w, http.StatusOK, "authorize", page)
}

// authCode is an issued, not yet expired oauth code.
type authCode struct {
	OpenID string
	Scope  string
	Exp    int64
	Used   bool
}

// handleAuthorizeConfirm serves the links of the authorization page: it
// issues a single-use code and redirects like WeChat, or redirects with
// only the state when the user refuses.
func (s *Sandbox) handleAuthorizeConfirm(w http.ResponseWriter, r *http.Request) {
	p, aerr := s.parseAuthorize(r)
	if aerr != nil {
		s.authErrorPage(w, aerr)
		return
	}
	q := r.URL.Query()
	if q.Get("deny") != "" {
		http.Redirect(w, r, appendQuery(p.RedirectURI, "state="+p.State), http.StatusFound)
		return
	}
	u, ok := findUser(q.Get("openid"))
	if q.Get("openid") == OpenIDSnapshot {
		u, ok = User{OpenID: OpenIDSnapshot}, true
	}
	if !ok {
		s.authErrorPage(w, &authError{40003, "未知的测试用户 (unknown test user openid)"})
		return
	}
	b := make([]byte, 16)
	rand.Read(b)
	code := hex.EncodeToString(b)
	s.mu.Lock()
	now := s.now().UnixNano()
	for k, c := range s.state.codes {
		if now >= c.Exp {
			delete(s.state.codes, k)
		}
	}
	s.state.codes[code] = &authCode{OpenID: u.OpenID, Scope: p.Scope, Exp: now + int64(codeTTL)}
	s.mu.Unlock()
	http.Redirect(w, r, appendQuery(p.RedirectURI, "code="+code+"&state="+p.State), http.StatusFound)
}

// appendQuery adds extra to the query of rawURL. Like WeChat, it inserts
// before any fragment, so single-page apps with "#/route" redirect URIs
// get the code in the real query.
func appendQuery(rawURL, extra string) string {
	u, frag, hasFrag := strings.Cut(rawURL, "#")
	switch {
	case !strings.Contains(u, "?"):
		u += "?"
	case !strings.HasSuffix(u, "?") && !strings.HasSuffix(u, "&"):
		u += "&"
	}
	u += extra
	if hasFrag {
		u += "#" + frag
	}
	return u
}

func (s *Sandbox) authErrorPage(w http.ResponseWriter, e *authError) {
	// WeChat shows these with status 200; 400 lets tests and scripts notice
	// without parsing the page.
	renderPage(w, http.StatusBadRequest, "error", e)
}

// snsTokenAnswer is the answer of sns/oauth2/access_token and refresh_token.
type snsTokenAnswer struct {
	AccessToken  string `json:"access_token"`
	ExpiresIn    int64  `json:"expires_in"`
	RefreshToken string `json:"refresh_token"`
	OpenID       string `json:"openid"`
	Scope        string `json:"scope"`
	UnionID      string `json:"unionid,omitempty"`
	// IsSnapshotUser is 1 for a visitor in snapshot mode, whose openid is
	// virtual.
	IsSnapshotUser int `json:"is_snapshotuser,omitempty"`
}

// handleSNSAccessToken serves GET sns/oauth2/access_token: exchanges a code
// once for a user access token and a refresh token.
func (s *Sandbox) handleSNSAccessToken(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	appID, secret, code := q.Get("appid"), q.Get("secret"), q.Get("code")
	switch {
	case appID == "":
		writeErr(w, ctypeJSON, 41002)
		return
	case secret == "":
		writeErr(w, ctypeJSON, 41004)
		return
	case code == "":
		writeErr(w, ctypeJSON, 41008)
		return
	case q.Get("grant_type") != "authorization_code":
		writeErr(w, ctypeJSON, 40002)
		return
	case appID != s.appID:
		writeErr(w, ctypeJSON, 40013)
		return
	case secret != s.secret:
		writeErr(w, ctypeJSON, 40125)
		return
	}
	s.mu.Lock()
	c, ok := s.state.codes[code]
	now := s.now().UnixNano()
	switch {
	case !ok || now >= c.Exp:
		s.mu.Unlock()
		writeErr(w, ctypeJSON, 40029)
		return
	case c.Used:
		s.mu.Unlock()
		writeErr(w, ctypeJSON, 40163)
		return
	}
	c.Used = true
	access, _ := s.issueLocked(claims{Kind: kindUser, OpenID: c.OpenID, Scope: c.Scope}, s.userTokenTTL)
	refresh, _ := s.issueLocked(claims{Kind: kindRefresh, OpenID: c.OpenID, Scope: c.Scope}, refreshTokenTTL)
	s.mu.Unlock()
	ans := snsTokenAnswer{
		AccessToken: access, ExpiresIn: seconds(s.userTokenTTL), RefreshToken: refresh,
		OpenID: c.OpenID, Scope: c.Scope,
	}
	if c.OpenID == OpenIDSnapshot {
		ans.IsSnapshotUser = 1
	}
	if u, _ := findUser(c.OpenID); c.Scope == "snsapi_userinfo" {
		// WeChat only reveals the unionid with the userinfo scope.
		ans.UnionID = u.UnionID
	}
	writeJSON(w, ctypeJSON, ans)
}

// handleSNSRefresh serves GET sns/oauth2/refresh_token. The refresh token
// is answered back unchanged: its 30 days are not extended.
func (s *Sandbox) handleSNSRefresh(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	appID, rt := q.Get("appid"), q.Get("refresh_token")
	switch {
	case appID == "":
		writeErr(w, ctypeJSON, 41002)
		return
	case rt == "":
		writeErr(w, ctypeJSON, 41003)
		return
	case q.Get("grant_type") != "refresh_token":
		writeErr(w, ctypeJSON, 40002)
		return
	case appID != s.appID:
		writeErr(w, ctypeJSON, 40013)
		return
	}
	c, code := s.check(rt, kindRefresh)
	switch code {
	case 0:
	case 42001:
		writeErr(w, ctypeJSON, 42002)
		return
	default:
		writeErr(w, ctypeJSON, 40030)
		return
	}
	s.mu.Lock()
	access, _ := s.issueLocked(claims{Kind: kindUser, OpenID: c.OpenID, Scope: c.Scope}, s.userTokenTTL)
	s.mu.Unlock()
	writeJSON(w, ctypeJSON, snsTokenAnswer{
		AccessToken: access, ExpiresIn: seconds(s.userTokenTTL), RefreshToken: rt,
		OpenID: c.OpenID, Scope: c.Scope,
	})
}

// userToken validates the access_token and openid parameters of an sns
// API and answers the error itself when they are not usable.
func (s *Sandbox) userToken(w http.ResponseWriter, r *http.Request) (claims, bool) {
	q := r.URL.Query()
	tok, openid := q.Get("access_token"), q.Get("openid")
	if tok == "" {
		writeErr(w, ctypeJSON, 41001)
		return claims{}, false
	}
	if openid == "" {
		writeErr(w, ctypeJSON, 41009)
		return claims{}, false
	}
	c, code := s.check(tok, kindUser)
	if code == 0 && c.OpenID != openid {
		code = 40003
	}
	if code != 0 {
		writeErr(w, ctypeJSON, code)
		return claims{}, false
	}
	return c, true
}

// handleSNSAuth serves GET sns/auth, which checks a user access token.
func (s *Sandbox) handleSNSAuth(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.userToken(w, r); ok {
		writeJSON(w, ctypeJSON, okAnswer)
	}
}

// handleSNSUserinfo serves GET sns/userinfo, which needs the
// snsapi_userinfo scope.
func (s *Sandbox) handleSNSUserinfo(w http.ResponseWriter, r *http.Request) {
	c, ok := s.userToken(w, r)
	if !ok {
		return
	}
	if c.Scope != "snsapi_userinfo" {
		writeErr(w, ctypeJSON, 48001)
		return
	}
	u, ok := findUser(c.OpenID)
	if !ok {
		writeErr(w, ctypeJSON, 40003)
		return
	}
	writeJSON(w, ctypeJSON, struct {
		OpenID     string   `json:"openid"`
		Nickname   string   `json:"nickname"`
		Sex        int      `json:"sex"`
		Province   string   `json:"province"`
		City       string   `json:"city"`
		Country    string   `json:"country"`
		HeadImgURL string   `json:"headimgurl"`
		Privilege  []string `json:"privilege"`
		UnionID    string   `json:"unionid,omitempty"`
	}{u.OpenID, u.Nickname, u.Sex, u.Province, u.City, u.Country, baseURL(r) + "/" + u.HeadImgURL, []string{}, u.UnionID})
}
