package rpc_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/100steps/wxappliance/appliance/sandbox"
	"github.com/100steps/wxappliance/oauth"
	"github.com/100steps/wxappliance/rpc"
	"github.com/100steps/wxappliance/rpc/client"
)

func TestSessionOpenID(t *testing.T) {
	e := newEnv(t)
	c := e.dial()
	id := e.login(sandbox.OpenIDZhangsan, oauth.ScopeBase)

	var got struct{ OpenID string }
	call(t, c, "session.openid", map[string]string{"session": id}, &got)
	if got.OpenID != sandbox.OpenIDZhangsan {
		t.Fatalf("openid %q", got.OpenID)
	}

	unknown := callErr(t, c, "session.openid", map[string]string{"session": oauth.NewSecret()}, rpc.CodeNotLoggedIn, 401)
	if unknown.Data.Msg != "请先登录微信" {
		t.Fatalf("msg %q, want the envelope's", unknown.Data.Msg)
	}
	callErr(t, c, "session.openid", map[string]string{"session": "';DROP"}, rpc.CodeNotLoggedIn, 401)
	// No cookie to pass on: not logged in, as over HTTP.
	callErr(t, c, "session.openid", nil, rpc.CodeNotLoggedIn, 401)
	callErr(t, c, "session.openid", map[string]string{"session": ""}, rpc.CodeNotLoggedIn, 401)
	callErr(t, c, "session.openid", map[string]any{"session": 12}, rpc.CodeInvalidParams, 400)
	typo := callErr(t, c, "session.openid", map[string]string{"sessionid": id}, rpc.CodeInvalidParams, 400)
	if !strings.Contains(typo.Data.Msg, "sessionid") {
		t.Fatalf("unknown member not named: %q", typo.Data.Msg)
	}
	callErr(t, c, "session.openid", []string{id}, rpc.CodeInvalidParams, 400)
	callErr(t, c, "session.nope", nil, rpc.CodeMethodNotFound, 404)
}

func TestSessionRevoke(t *testing.T) {
	e := newEnv(t)
	c := e.dial()
	id := e.login(sandbox.OpenIDZhangsan, oauth.ScopeBase)

	var got struct{ Revoked bool }
	call(t, c, "session.revoke", map[string]string{"session": id}, &got)
	if !got.Revoked {
		t.Fatal("a live session was not revoked")
	}
	callErr(t, c, "session.openid", map[string]string{"session": id}, rpc.CodeNotLoggedIn, 401)
	call(t, c, "session.revoke", map[string]string{"session": id}, &got)
	if got.Revoked {
		t.Fatal("revoked twice")
	}
	callErr(t, c, "session.revoke", nil, rpc.CodeInvalidParams, 400)
}

func TestSessionUser(t *testing.T) {
	e := newEnv(t)
	c := e.dial()
	id := e.login(sandbox.OpenIDXiaoming, oauth.ScopeUserInfo)

	var raw json.RawMessage
	call(t, c, "session.user", map[string]string{"session": id}, &raw)
	// Emoji and Chinese arrive as WeChat sent them, not \u-escaped.
	if !bytes.Contains(raw, []byte(`"nickname":"`+sandbox.NicknameXiaoming+`"`)) {
		t.Fatalf("session.user %s lacks nickname %q", raw, sandbox.NicknameXiaoming)
	}

	base := e.login(sandbox.OpenIDZhangsan, oauth.ScopeBase)
	scope := callErr(t, c, "session.user", map[string]string{"session": base}, rpc.CodeNotLoggedIn, 401)
	if !strings.Contains(scope.Data.Msg, "snsapi_userinfo") {
		t.Fatalf("msg %q does not say which scope is needed", scope.Data.Msg)
	}
	callErr(t, c, "session.user", map[string]string{"session": oauth.NewSecret()}, rpc.CodeNotLoggedIn, 401)
}

func TestTicketRedeemOnce(t *testing.T) {
	e := newEnv(t)
	c := e.dial()
	ticket, err := e.sessions.IssueTicket(context.Background(), oauth.Session{OpenID: sandbox.OpenIDAhua, Scope: oauth.ScopeUserInfo})
	if err != nil {
		t.Fatal(err)
	}
	// Many backends racing for one ticket: exactly one wins.
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins, losses := 0, 0
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var got struct{ OpenID, Scope string }
			err := c.Call(context.Background(), "ticket.redeem", map[string]string{"ticket": ticket}, &got)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil && got.OpenID == sandbox.OpenIDAhua && got.Scope == oauth.ScopeUserInfo:
				wins++
			case client.CodeOf(err) == rpc.CodeNotLoggedIn:
				losses++
			default:
				t.Errorf("redeem: %v %+v", err, got)
			}
		}()
	}
	wg.Wait()
	if wins != 1 || losses != 9 {
		t.Fatalf("%d redeemed, %d refused; want 1 and 9", wins, losses)
	}
	callErr(t, c, "ticket.redeem", map[string]string{"ticket": "not-a-ticket"}, rpc.CodeNotLoggedIn, 401)
	callErr(t, c, "ticket.redeem", map[string]string{}, rpc.CodeNotLoggedIn, 401)
	callErr(t, c, "ticket.redeem", map[string]int{"ticket": 1}, rpc.CodeInvalidParams, 400)
}

func TestUserGet(t *testing.T) {
	e := newEnv(t)
	c := e.dial()
	var raw json.RawMessage
	call(t, c, "user.get", map[string]string{"openid": sandbox.OpenIDZhangsan}, &raw)
	var info struct {
		Subscribe int    `json:"subscribe"`
		Remark    string `json:"remark"`
	}
	if err := json.Unmarshal(raw, &info); err != nil || info.Subscribe != 1 || info.Remark != "测试备注" {
		t.Fatalf("user.get %s", raw)
	}

	not := callErr(t, c, "user.get", map[string]string{"openid": sandbox.OpenIDLisi}, rpc.CodeNotSubscribed, 403)
	if not.Data.Msg != "请先关注公众号" {
		t.Fatalf("msg %q", not.Data.Msg)
	}
	bad := callErr(t, c, "user.get", map[string]string{"openid": "oSBX_nobody"}, rpc.CodeBadInput, 400)
	if bad.Data.Errcode != 40003 {
		t.Fatalf("errcode %d, want WeChat's 40003", bad.Data.Errcode)
	}
	callErr(t, c, "user.get", map[string]string{"openid": "a b"}, rpc.CodeBadInput, 400)

	e.sb.SetFault("cgi-bin/user/info", sandbox.Fault{Hang: true, Times: 1})
	to := callErr(t, c, "user.get", map[string]string{"openid": sandbox.OpenIDZhangsan}, rpc.CodeTimeout, 504)
	if to.Data.Msg != "微信服务器超时" {
		t.Fatalf("msg %q", to.Data.Msg)
	}
}

func TestMediaGet(t *testing.T) {
	e := newEnv(t)
	c := e.dial()
	var img struct {
		MediaData   string `json:"media_data"`
		ContentType string `json:"content_type"`
	}
	call(t, c, "media.get", map[string]string{"media_id": sandbox.MediaImage}, &img)
	data, err := base64.StdEncoding.DecodeString(img.MediaData)
	if err != nil || img.ContentType != "image/jpeg" || !bytes.HasPrefix(data, []byte{0xff, 0xd8}) {
		t.Fatalf("image: %v %q %d bytes", err, img.ContentType, len(data))
	}
	// The same bytes WeChat serves.
	resp, err := http.Get(e.up.URL + "/cgi-bin/media/get?media_id=" + sandbox.MediaImage + "&access_token=" + mustToken(t, c))
	if err != nil {
		t.Fatal(err)
	}
	direct, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Equal(direct, data) {
		t.Fatalf("media.get gave %d bytes, WeChat serves %d", len(data), len(direct))
	}

	var video map[string]string
	call(t, c, "media.get", map[string]string{"media_id": sandbox.MediaVideo}, &video)
	if !strings.HasSuffix(video["video_url"], sandbox.VideoPath) || len(video) != 1 {
		t.Fatalf("video: %v", video)
	}
	bad := callErr(t, c, "media.get", map[string]string{"media_id": "no-such-media"}, rpc.CodeBadInput, 400)
	if bad.Data.Msg != "media_id无效" || bad.Data.Errcode != 40007 {
		t.Fatalf("bad id: %+v", bad.Data)
	}
	callErr(t, c, "media.get", map[string]string{"media_id": sandbox.MediaBig}, rpc.CodeTooLarge, 413)
}

func mustToken(t *testing.T, c *client.Client) string {
	t.Helper()
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	call(t, c, "token.get", nil, &tok)
	return tok.AccessToken
}

func TestJSSDKConfig(t *testing.T) {
	e := newEnv(t)
	c := e.dial()
	var cfg struct {
		AppID     string `json:"appid"`
		Timestamp int64  `json:"timestamp"`
		NonceStr  string `json:"noncestr"`
		Signature string `json:"signature"`
	}
	call(t, c, "jssdk.config", map[string]string{"url": "https://app.example.com/page?a=1&b=2#frag"}, &cfg)
	if cfg.AppID != e.sb.AppID() || len(cfg.NonceStr) < 16 || len(cfg.Signature) != 40 ||
		time.Since(time.Unix(cfg.Timestamp, 0)).Abs() > time.Minute {
		t.Fatalf("config %+v", cfg)
	}
	callErr(t, c, "jssdk.config", map[string]string{"url": ""}, rpc.CodeInvalidParams, 400)
	// Not a signing oracle for other sites.
	for _, u := range []string{"ftp://app.example.com/", "https://evil.example/", "/relative"} {
		e := callErr(t, c, "jssdk.config", map[string]string{"url": u}, rpc.CodeBadInput, 400)
		if e.Data.Msg != "url参数缺失或无效" {
			t.Fatalf("%q: msg %q", u, e.Data.Msg)
		}
	}
}

func TestTokenGetAndInvalidate(t *testing.T) {
	e := newEnv(t, func(c *envConfig) { c.tokenAPI = oauth.TokenAPIToken })
	c := e.dial()
	var first struct {
		AccessToken string `json:"access_token"`
		ExpiresAt   int64  `json:"expires_at"`
		ExpiresIn   int64  `json:"expires_in"`
	}
	call(t, c, "token.get", map[string]any{}, &first)
	if first.AccessToken == "" || first.ExpiresIn < 7000 || first.ExpiresIn > 7200 ||
		time.Until(time.Unix(first.ExpiresAt, 0)) < 7000*time.Second {
		t.Fatalf("token.get %+v", first)
	}
	// The handed-out token works on WeChat.
	if !userInfoWorks(t, e, first.AccessToken) {
		t.Fatal("the handed-out token does not work")
	}
	fetches := e.sb.Count("cgi-bin/token")

	// A token that is not the current one changes nothing.
	var same struct {
		AccessToken string `json:"access_token"`
	}
	call(t, c, "token.invalidate", map[string]string{"access_token": "some-old-token"}, &same)
	if same.AccessToken != first.AccessToken || e.sb.Count("cgi-bin/token") != fetches {
		t.Fatalf("a stale report replaced the token: %q, %d fetches", same.AccessToken, e.sb.Count("cgi-bin/token")-fetches)
	}

	// Twenty servers reporting the current token at once: one refresh.
	e.sb.SetFault("cgi-bin/token", sandbox.Fault{Latency: 100 * time.Millisecond})
	var wg sync.WaitGroup
	got := make([]string, 20)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var tok struct {
				AccessToken string `json:"access_token"`
			}
			if err := c.Call(context.Background(), "token.invalidate", map[string]string{"access_token": first.AccessToken}, &tok); err != nil {
				t.Error(err)
			}
			got[i] = tok.AccessToken
		}()
	}
	wg.Wait()
	if n := e.sb.Count("cgi-bin/token") - fetches; n != 1 {
		t.Fatalf("%d refreshes for 20 reports of one token, want 1", n)
	}
	for _, v := range got {
		if v == first.AccessToken || v != got[0] {
			t.Fatalf("invalidate answered %q, want the one new token %q", v, got[0])
		}
	}
	if now := mustToken(t, c); now != got[0] {
		t.Fatalf("token.get %q after invalidate, want %q", now, got[0])
	}
	callErr(t, c, "token.invalidate", nil, rpc.CodeInvalidParams, 400)
	callErr(t, c, "token.get", map[string]string{"x": "y"}, rpc.CodeInvalidParams, 400)
}

func userInfoWorks(t *testing.T, e *env, token string) bool {
	t.Helper()
	resp, err := http.Get(e.up.URL + "/cgi-bin/user/info?openid=" + sandbox.OpenIDZhangsan + "&access_token=" + token)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ans struct {
		Errcode   int `json:"errcode"`
		Subscribe int `json:"subscribe"`
	}
	json.NewDecoder(resp.Body).Decode(&ans)
	return ans.Errcode == 0 && ans.Subscribe == 1
}
