package oauth

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Scopes of WeChat web authorization.
const (
	ScopeBase     = "snsapi_base"     // silent, openid only
	ScopeUserInfo = "snsapi_userinfo" // asks the user, gives nickname and avatar
)

// Web is WeChat's web authorization (网页授权): the browser is sent to
// WeChat, comes back with a code, and the code buys a user access token.
type Web struct {
	client    *Client
	appID     string
	secret    string
	oauthBase string
	now       func() time.Time
}

// NewWeb returns the web authorization flow for the app. oauthBase is where
// browsers authorize, https://open.weixin.qq.com outside the sandbox.
func NewWeb(client *Client, appID, secret, oauthBase string, now func() time.Time) *Web {
	if now == nil {
		now = time.Now
	}
	return &Web{client: client, appID: appID, secret: secret, oauthBase: strings.TrimRight(oauthBase, "/"), now: now}
}

// UserToken is what a code or refresh_token buys.
type UserToken struct {
	AccessToken  string
	RefreshToken string
	OpenID       string
	UnionID      string
	Scope        string
	ExpiresAt    time.Time
	// Snapshot is a visitor in WeChat's snapshot mode (快照页, a page opened
	// from a share in Moments): OpenID is virtual and the user has not
	// really authorized anything.
	Snapshot bool
}

// AuthorizeURL is the page the browser is sent to. WeChat matches it with
// a strict pattern: the parameters must come in this order and the URL must
// end with #wechat_redirect, so it is written out by hand rather than with
// url.Values, which sorts.
func (w *Web) AuthorizeURL(redirectURI, scope, state string) string {
	var b strings.Builder
	b.WriteString(w.oauthBase)
	b.WriteString("/connect/oauth2/authorize?appid=")
	b.WriteString(url.QueryEscape(w.appID))
	b.WriteString("&redirect_uri=")
	b.WriteString(url.QueryEscape(redirectURI))
	b.WriteString("&response_type=code&scope=")
	b.WriteString(url.QueryEscape(scope))
	b.WriteString("&state=")
	b.WriteString(url.QueryEscape(state))
	b.WriteString("#wechat_redirect")
	return b.String()
}

// Exchange trades a code for a user token. Codes are single use: 40163 when
// reused, 40029 when unknown or expired.
func (w *Web) Exchange(ctx context.Context, code string) (UserToken, error) {
	return w.tokenCall(ctx, "sns/oauth2/access_token", url.Values{
		"appid": {w.appID}, "secret": {w.secret}, "code": {code}, "grant_type": {"authorization_code"},
	})
}

// Refresh trades a refresh_token (valid 30 days) for a new access token.
func (w *Web) Refresh(ctx context.Context, refreshToken string) (UserToken, error) {
	return w.tokenCall(ctx, "sns/oauth2/refresh_token", url.Values{
		"appid": {w.appID}, "grant_type": {"refresh_token"}, "refresh_token": {refreshToken},
	})
}

// UserInfo is sns/userinfo: the profile the user agreed to share, as WeChat
// sent it. It needs a snsapi_userinfo token (48001 otherwise).
func (w *Web) UserInfo(ctx context.Context, accessToken, openid string) (json.RawMessage, error) {
	var raw json.RawMessage
	err := w.client.CallJSON(ctx, Request{
		Path:  "sns/userinfo",
		Query: url.Values{"access_token": {accessToken}, "openid": {openid}, "lang": {"zh_CN"}},
	}, &raw)
	return raw, err
}

func (w *Web) tokenCall(ctx context.Context, path string, q url.Values) (UserToken, error) {
	var out struct {
		AccessToken  string `json:"access_token"`
		ExpiresIn    int64  `json:"expires_in"`
		RefreshToken string `json:"refresh_token"`
		OpenID       string `json:"openid"`
		UnionID      string `json:"unionid"`
		Scope        string `json:"scope"`
		Snapshot     int    `json:"is_snapshotuser"`
	}
	if err := w.client.CallJSON(ctx, Request{Path: path, Query: q}, &out); err != nil {
		return UserToken{}, err
	}
	if out.AccessToken == "" || out.OpenID == "" {
		return UserToken{}, fmt.Errorf("%w: %s without access_token or openid", ErrBadResponse, path)
	}
	return UserToken{
		AccessToken:  out.AccessToken,
		RefreshToken: out.RefreshToken,
		OpenID:       out.OpenID,
		UnionID:      out.UnionID,
		Scope:        out.Scope,
		ExpiresAt:    w.now().Add(time.Duration(out.ExpiresIn) * time.Second),
		Snapshot:     out.Snapshot == 1,
	}, nil
}
