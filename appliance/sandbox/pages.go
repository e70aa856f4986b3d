package sandbox

import (
	"bytes"
	"html/template"
	"net/http"
	"strconv"
)

// pages holds the sandbox's HTML. Links are relative so they work under
// whatever prefix the sandbox is mounted at.
var pages = template.Must(template.New("pages").Parse(`
{{define "head"}}<!DOCTYPE html>
<html lang="zh-CN">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.}} - 微信沙箱 WeChat sandbox</title>
<style>
body { font-family: -apple-system, "PingFang SC", "Microsoft YaHei", sans-serif; margin: 0; background: #ededed; color: #191919; }
main { max-width: 28rem; margin: 0 auto; padding: 1.5rem 1rem; }
.banner { background: #fa5151; color: #fff; padding: .5rem 1rem; font-size: .85rem; text-align: center; }
.card { background: #fff; border-radius: .5rem; padding: 1rem; margin: 1rem 0; }
a.btn { display: block; text-align: center; padding: .75rem; margin: .5rem 0; border-radius: .4rem; background: #07c160; color: #fff; text-decoration: none; }
a.btn.deny { background: #f2f2f2; color: #191919; }
.muted { color: #888; font-size: .85rem; word-break: break-all; }
.error { color: #fa5151; }
code { background: #f2f2f2; padding: 0 .2rem; }
</style>
</head>
<body>
<div class="banner">这是微信沙箱，不是微信 · This is the WeChat sandbox, not WeChat</div>
<main>
{{end}}

{{define "foot"}}</main>
</body>
</html>
{{end}}

{{define "index"}}{{template "head" "首页"}}
<h1>微信沙箱 WeChat sandbox</h1>
<div class="card">
<p>此服务模拟微信公众平台的接口（access_token、网页授权、JS-SDK 票据、素材下载），用于在没有公众号、没有网络的情况下运行和测试。</p>
<p>This server fakes WeChat's Official Account APIs so the appliance can run and be tested without an account or network access. Nothing here talks to WeChat.</p>
<p class="muted">AppID: <code>{{.AppID}}</code></p>
</div>
<div class="card">
<h2>演示 Demo</h2>
<p><a href="demo">登录示例页 Login demo</a>：前端接入 /auth 的示例，用沙箱用户登录。The frontend integration example: log in as a sandbox user.</p>
</div>
<div class="card">
<h2>测试用户 Test users</h2>
<ul>
{{range .Users}}<li>{{.Nickname}} <span class="muted">{{.OpenID}}{{if not .Subscribed}} · 未关注 not subscribed{{end}}</span></li>
{{end}}</ul>
</div>
<div class="card">
<h2>消息推送 Callback</h2>
<p><a href="push" id="push-link">发送测试消息或事件 Push a test message or event</a> 到本服务的回调地址，查看回复规则的效果。</p>
</div>
<div class="card">
<h2>素材 Media</h2>
<p>cgi-bin/media/get（及 /offiaccount/media）认识这些 media_id。These media ids exist:</p>
<ul>
<li><code>sandbox-image</code> 小图片 a small JPEG</li>
<li><code>sandbox-voice</code> 语音 AMR audio</li>
<li><code>sandbox-video</code> 视频，返回 {"video_url": ...} a video, answered with its URL as WeChat does</li>
<li><code>sandbox-64k</code> 64 KiB JPEG，用于压测 for load tests</li>
<li><code>sandbox-big</code> 略大于 10 MiB 的 JPEG，用于测试大小上限 just over 10 MiB, for the size cap</li>
</ul>
<p class="muted">其它 id 返回 40007 invalid media_id. Any other id answers 40007.</p>
</div>
<div class="card">
<h2>控制 Control</h2>
<ul>
<li><a href="_control/stats">_control/stats</a> 调用计数 call counts (GET)</li>
<li><a href="_control/users">_control/users</a> 测试用户 test users (GET, JSON)</li>
</ul>
<p class="muted">POST <code>_control/fault</code> {"endpoint":"cgi-bin/user/info","hang":true,"times":1}: 注入故障 inject a fault (hang, status, errcode, errmsg, malformed, latency_ms, times);
POST <code>_control/clear</code>: 清除故障 faults off;
POST <code>_control/expire</code>: 所有令牌过期 every token expires;
POST <code>_control/reset</code>: 调用计数清零 counts back to zero.</p>
</div>
{{template "foot"}}{{end}}

{{define "authorize"}}{{template "head" "网页授权"}}
<h1>网页授权</h1>
<div class="card">
<p>请选择以哪个测试用户的身份授权（{{if eq .Scope "snsapi_userinfo"}}获取昵称、头像等基本信息{{else}}仅获取 openid，静默授权{{end}}）。</p>
<p class="muted">Pick the test user who is at this browser. Scope: <code>{{.Scope}}</code></p>
<p class="muted">将跳转到 Redirect to: {{.RedirectURI}}</p>
{{range .Users}}<a class="btn" id="user-{{.OpenID}}" data-openid="{{.OpenID}}" href="{{.Link}}">以 {{.Nickname}} 身份授权</a>
{{end}}<a class="btn" id="snapshot" href="{{.Snapshot}}">以快照模式访客身份进入（朋友圈分享的快照页）</a>
<a class="btn deny" id="deny" href="{{.Deny}}">拒绝授权</a>
</div>
{{template "foot"}}{{end}}

{{define "error"}}{{template "head" "错误"}}
<h1 class="error">授权失败</h1>
<div class="card" id="error" data-errcode="{{.Code}}">
{{if .Code}}<p>错误码 errcode: <code>{{.Code}}</code></p>{{end}}
<p>{{.Msg}}</p>
</div>
{{template "foot"}}{{end}}
`))

// authorizePage is the data of the "authorize" template.
type authorizePage struct {
	Scope       string
	RedirectURI string
	Users       []authorizeUser
	Deny        string
	Snapshot    string // the link for a visitor in snapshot mode
}

type authorizeUser struct {
	User
	Link string
}

// renderPage executes template name into a buffer first, so a template
// error becomes a 500 rather than half a page.
func renderPage(w http.ResponseWriter, status int, name string, data any) {
	var buf bytes.Buffer
	if err := pages.ExecuteTemplate(&buf, name, data); err != nil {
		http.Error(w, "sandbox: rendering page: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// serveIndex serves the sandbox root.
func (s *Sandbox) serveIndex(w http.ResponseWriter, r *http.Request) {
	renderPage(w, http.StatusOK, "index", struct {
		AppID string
		Users []User
	}{s.appID, users})
}
