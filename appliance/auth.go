package appliance

import (
	"net/http"
	"net/url"
	"slices"

	"github.com/100steps/wxappliance/appliance/wire"
	"github.com/100steps/wxappliance/oauth"
)

// The login binding cookie ties a login state to the browser that started
// it, so a callback link crafted by someone else cannot finish a login here.
func (a *Appliance) bindingCookieName() string { return a.cfg.OAuth.SessionCookie + "_login" }

func (a *Appliance) cookie(name, value string, maxAge int) *http.Cookie {
	return &http.Cookie{
		Name:     name,
		Value:    value,
		Path:     a.cfg.OAuth.CookiePath,
		MaxAge:   maxAge,
		HttpOnly: true,
		Secure:   a.secureCookies,
		SameSite: http.SameSiteLaxMode,
	}
}

// auth is S1: GET /auth?state=URL[&scope=...][&ticket=1]. state is the
// page to return to after login; it must be on an allowed host.
func (a *Appliance) auth(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	if q.Get("state") == "" {
		return badRequest("缺少state参数（登录后返回的页面地址）", nil)
	}
	returnURL, err := checkReturnURL(q.Get("state"), a.allowedReturn)
	if err != nil {
		return badRequest("state参数不是允许的返回地址", err)
	}
	scope := a.cfg.OAuth.Scope
	if s := q.Get("scope"); s != "" {
		if s != oauth.ScopeBase && s != oauth.ScopeUserInfo {
			return badRequest("scope参数只能是snsapi_base或snsapi_userinfo", nil)
		}
		scope = s
	}
	// One binding per browser, kept across logins, so two tabs logging in
	// at once do not break each other.
	binding := cookieValue(r, a.bindingCookieName())
	if !oauth.ValidSecret(binding) {
		binding = oauth.NewSecret()
	}
	nonce, err := a.sessions.BeginLogin(r.Context(), binding, oauth.LoginRequest{
		ReturnURL: returnURL,
		Scope:     scope,
		Ticket:    q.Get("ticket") == "1",
	})
	if err != nil {
		return err
	}
	http.SetCookie(w, a.cookie(a.bindingCookieName(), binding, int(oauth.LoginStateTTL.Seconds())))
	w.Header().Set("Cache-Control", "no-store")
	redirect := a.web.AuthorizeURL(a.cfg.Server.BaseURL+"/auth/code", scope, nonce)
	http.Redirect(w, r, redirect, http.StatusFound)
	return nil
}

// authCode is S2: WeChat sends the browser back here with code and the
// nonce as state.
func (a *Appliance) authCode(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	done, err := a.sessions.CompleteLogin(r.Context(), q.Get("state"), cookieValue(r, a.bindingCookieName()),
		q.Get("code"), cookieValue(r, a.cfg.OAuth.SessionCookie))
	if err != nil {
		return err
	}
	w.Header().Set("Referrer-Policy", "no-referrer")
	w.Header().Set("Cache-Control", "no-store")
	target := done.ReturnURL
	if done.SessionID != "" {
		http.SetCookie(w, a.cookie(a.cfg.OAuth.SessionCookie, done.SessionID, int(a.cfg.OAuth.SessionTTL.D().Seconds())))
	}
	if done.Ticket != "" {
		target = appendQuery(target, "wx_ticket", done.Ticket)
	}
	if done.Snapshot {
		target = appendQuery(target, "wx_snapshot", "1")
	}
	http.Redirect(w, r, target, http.StatusFound)
	return nil
}

// cookieValue is the value of the request's cookie name, or "".
func cookieValue(r *http.Request, name string) string {
	if c, err := r.Cookie(name); err == nil {
		return c.Value
	}
	return ""
}

// authLogout is POST /auth/logout[?return=URL]: the server-side session
// ends and the cookie expires. Only a page on an allowed origin (or the
// appliance's own), or a request without Origin, may log a browser out,
// so another site cannot. Answers 204, or 302 to return when it is an
// allowed URL.
func (a *Appliance) authLogout(w http.ResponseWriter, r *http.Request) error {
	if origin := r.Header.Get("Origin"); origin != "" && !a.sameOrAllowedOrigin(origin) {
		return wire.Errorf(wire.Forbidden, "跨域来源不在允许列表中", nil)
	}
	var target string
	if raw := r.URL.Query().Get("return"); raw != "" {
		var err error
		if target, err = checkReturnURL(raw, a.allowedReturn); err != nil {
			return badRequest("return参数不是允许的返回地址", err)
		}
	}
	if _, err := a.sessions.Revoke(r.Context(), cookieValue(r, a.cfg.OAuth.SessionCookie)); err != nil {
		return err
	}
	http.SetCookie(w, a.cookie(a.cfg.OAuth.SessionCookie, "", -1))
	w.Header().Set("Cache-Control", "no-store")
	if target != "" {
		http.Redirect(w, r, target, http.StatusFound)
		return nil
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// sameOrAllowedOrigin reports whether origin is in cors.allowed_origins or
// is the appliance's own (server.base_url's scheme and host).
func (a *Appliance) sameOrAllowedOrigin(origin string) bool {
	if slices.Contains(a.cfg.CORS.AllowedOrigins, origin) {
		return true
	}
	own, err := url.Parse(a.cfg.Server.BaseURL)
	return err == nil && origin == own.Scheme+"://"+own.Host
}

// errNoCookie is "not logged in" when the browser sent no session cookie at
// all: usually not a logged-out user but a frontend whose requests do not
// carry it.
var errNoCookie = &wire.Error{
	Kind: wire.NotLoggedIn,
	Msg:  wire.MsgNotLoggedIn,
	Hint: "no session cookie arrived with this request: the page must use the same host name as server.base_url " +
		"(127.0.0.1 and localhost are different sites), and cross-origin requests need credentials: 'include' " +
		"(fetch) or withCredentials (XHR) from an origin in cors.allowed_origins",
	Err: oauth.ErrNoSession,
}

// session returns the request's session or oauth.ErrNoSession.
func (a *Appliance) session(r *http.Request) (string, oauth.Session, error) {
	c, err := r.Cookie(a.cfg.OAuth.SessionCookie)
	if err != nil {
		return "", oauth.Session{}, errNoCookie
	}
	sess, err := a.sessions.Lookup(r.Context(), c.Value)
	return c.Value, sess, err
}

// authOpenID is U1: {"openid": ...} for the logged-in browser.
func (a *Appliance) authOpenID(w http.ResponseWriter, r *http.Request) error {
	_, sess, err := a.session(r)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]string{"openid": sess.OpenID})
	return nil
}

// authUser is U2: sns/userinfo with the session's user token.
func (a *Appliance) authUser(w http.ResponseWriter, r *http.Request) error {
	id, _, err := a.session(r)
	if err != nil {
		return err
	}
	info, err := a.sessions.UserInfo(r.Context(), id)
	if err != nil {
		return err
	}
	return writeRawObject(w, info)
}
