package sandbox

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/100steps/wxappliance/callback"
)

// The push page (push): WeChat's side of the message callback. It builds a
// message or event as WeChat would send it for a test user, signs it and,
// when the callback has an EncodingAESKey, encrypts it; posts it to the
// appliance's own callback; and shows the raw exchange and the reply,
// decrypted. Users try their reply rules here without an account.

// CallbackTarget is the callback the push page sends to.
type CallbackTarget struct {
	// URL is the callback's absolute URL; empty means the callback is off.
	URL string
	// Token and EncodingAESKey are the callback's; without a key only
	// plaintext mode is offered, with one only the encrypted modes.
	Token          string
	EncodingAESKey string
}

// OriginalID is the sandbox account's original ID (原始ID), the ToUserName
// of every pushed message.
const OriginalID = "gh_sandbox000000"

// pushTimeout bounds a push: the callback answers within 5 s by design.
const pushTimeout = 10 * time.Second

// Push modes, as in WeChat's server configuration (消息加解密方式).
const (
	pushPlaintext  = "plaintext"  // 明文模式
	pushCompatible = "compatible" // 兼容模式
	pushSafe       = "safe"       // 安全模式
)

// pushKind is one kind of message or event the page can send.
type pushKind struct {
	Value, Label string
}

var pushKinds = []pushKind{
	{"text", "文本消息 text"},
	{"image", "图片消息 image"},
	{"voice", "语音消息 voice (内容作为语音识别结果 content is the recognition)"},
	{"location", "位置消息 location"},
	{"link", "链接消息 link"},
	{"subscribe", "关注 subscribe"},
	{"subscribe_qr", "扫码关注 subscribe via QR (事件KEY作为场景值 event key is the scene)"},
	{"SCAN", "已关注扫码 SCAN (事件KEY作为场景值)"},
	{"unsubscribe", "取消关注 unsubscribe"},
	{"CLICK", "菜单点击 CLICK"},
	{"VIEW", "菜单跳转 VIEW (事件KEY为网址 event key is the URL)"},
	{"LOCATION", "上报地理位置 LOCATION"},
	{"subscribe_msg_popup_event", "订阅通知弹窗 subscription popup (事件KEY为模板ID event key is the template id)"},
	{"subscribe_msg_change_event", "订阅通知管理 subscription changed in settings (事件KEY为模板ID)"},
	{"subscribe_msg_sent_event", "订阅通知发送结果 subscription notification sent (事件KEY为模板ID)"},
}

// pushForm is what the user chose.
type pushForm struct {
	OpenID, Kind, Content, EventKey, Mode string
}

// pushResult is one exchange with the callback.
type pushResult struct {
	Request      string // method, URL and query
	RequestBody  string
	Message      string // the message before encryption
	Status       int
	ResponseBody string
	Reply        string // the reply XML, decrypted when it was encrypted
	Note         string
	Err          string
}

type pushPageData struct {
	On     bool
	Target string
	Modes  []string
	Users  []User
	Kinds  []pushKind
	Form   pushForm
	Menu   []menuButton // the menu of the last menu/create, to click
	Custom []string     // customer service messages received, newest first
	Result *pushResult
}

// menuButton is a button of the stored menu as the push page shows it:
// clicking one pushes what WeChat pushes when a user taps it.
type menuButton struct {
	Name  string
	Type  string
	Value string // "CLICK:<key>" or "VIEW:<url>"; empty for types the page cannot push
	Sub   []menuButton
}

// storedMenuButtons reads the stored menu for the push page.
func (s *Sandbox) storedMenuButtons() []menuButton {
	var m struct {
		Button []struct {
			Type, Name, Key, URL string
			SubButton            []struct{ Type, Name, Key, URL string } `json:"sub_button"`
		} `json:"button"`
	}
	if json.Unmarshal(s.storedMenu(), &m) != nil {
		return nil
	}
	value := func(typ, key, url string) string {
		switch typ {
		case "click":
			return "CLICK:" + key
		case "view":
			return "VIEW:" + url
		}
		return ""
	}
	var out []menuButton
	for _, b := range m.Button {
		mb := menuButton{Name: b.Name, Type: b.Type, Value: value(b.Type, b.Key, b.URL)}
		for _, sub := range b.SubButton {
			mb.Sub = append(mb.Sub, menuButton{Name: sub.Name, Type: sub.Type, Value: value(sub.Type, sub.Key, sub.URL)})
		}
		out = append(out, mb)
	}
	return out
}

var _ = template.Must(pages.Parse(`
{{define "menubutton"}}{{if .Value}}<button type="submit" class="menu-button" name="menu" value="{{.Value}}">{{.Name}}</button>{{else}}<button type="button" class="menu-button" disabled title="{{.Type}}">{{.Name}} ({{.Type}})</button>{{end}}{{end}}
{{define "push"}}{{template "head" "消息推送"}}
<style>
pre { white-space: pre-wrap; word-break: break-all; background: #f7f7f7; padding: .5rem; font-size: .75rem; }
label { display: block; margin: .5rem 0 .2rem; }
select, input { width: 100%; box-sizing: border-box; padding: .4rem; }
button { margin-top: 1rem; width: 100%; padding: .75rem; border: 0; border-radius: .4rem; background: #07c160; color: #fff; font-size: 1rem; }
#menu { display: flex; gap: .5rem; }
.menu-col { flex: 1; }
.menu-button { margin-top: .4rem; padding: .5rem; background: #576b95; font-size: .9rem; }
.menu-button:disabled { background: #ccc; }
</style>
<h1>消息推送 Push a message</h1>
{{if not .On}}
<div class="card" id="off"><p class="error">回调未开启：请设置 callback.token。</p>
<p class="muted">The callback is off: set callback.token in the configuration.</p></div>
{{else}}
<div class="card">
<p>以测试用户的身份向本服务的回调地址发送一条消息或事件，查看回复。</p>
<p class="muted">Sends a message or event to this appliance's callback as WeChat would, signed{{if gt (len .Modes) 1}} and encrypted{{end}}, and shows the reply.</p>
<p class="muted">回调地址 Callback: <code id="target">{{.Target}}</code></p>
<form method="post" action="push">
<label for="openid">用户 User</label>
<select id="openid" name="openid">{{range .Users}}<option value="{{.OpenID}}"{{if eq .OpenID $.Form.OpenID}} selected{{end}}>{{.Nickname}} ({{.OpenID}})</option>{{end}}</select>
<label for="kind">类型 Kind</label>
<select id="kind" name="kind">{{range .Kinds}}<option value="{{.Value}}"{{if eq .Value $.Form.Kind}} selected{{end}}>{{.Label}}</option>{{end}}</select>
<label for="content">内容 Content (text, voice)</label>
<input id="content" name="content" value="{{.Form.Content}}">
<label for="event_key">事件KEY Event key (CLICK, VIEW, QR scene)</label>
<input id="event_key" name="event_key" value="{{.Form.EventKey}}">
<label for="mode">加解密方式 Mode</label>
<select id="mode" name="mode">{{range .Modes}}<option value="{{.}}"{{if eq . $.Form.Mode}} selected{{end}}>{{.}}</option>{{end}}</select>
<button type="submit" id="send">发送 Send</button>
{{if .Menu}}<h2>自定义菜单 Menu</h2>
<p class="muted">点击菜单推送 CLICK 或 VIEW 事件，如同用户在微信中点击。Tap a button to push its CLICK or VIEW event, as WeChat does.</p>
<div id="menu">{{range .Menu}}<div class="menu-col">{{if .Sub}}<p><b>{{.Name}}</b></p>{{range .Sub}}{{template "menubutton" .}}{{end}}{{else}}{{template "menubutton" .}}{{end}}</div>{{end}}</div>{{end}}
</form>
</div>
{{if .Custom}}<div class="card" id="custom">
<h2>客服消息 Customer service messages</h2>
<p class="muted">appliance 发给测试用户的客服消息（如超时后送达的回复），最新在前。Sent to test users with cgi-bin/message/custom/send (late callback replies among them), newest first.</p>
{{range .Custom}}<pre class="custom-message">{{.}}</pre>{{end}}
</div>{{end}}
{{with .Result}}
<div class="card" id="result" data-status="{{.Status}}">
{{if .Err}}<p class="error" id="error">{{.Err}}</p>{{end}}
<h2>回复 Reply</h2>
{{if .Note}}<p id="note">{{.Note}}</p>{{end}}
{{if .Reply}}<pre id="reply">{{.Reply}}</pre>{{end}}
<h2>请求 Request</h2>
<pre id="request">{{.Request}}</pre>
<p class="muted">消息明文 Message before encryption</p>
<pre id="message">{{.Message}}</pre>
<p class="muted">请求体 Body</p>
<pre id="request-body">{{.RequestBody}}</pre>
<h2>响应 Response</h2>
<p class="muted">HTTP {{.Status}}</p>
<pre id="response-body">{{.ResponseBody}}</pre>
</div>
{{end}}
{{end}}
{{template "foot"}}{{end}}
`))

// servePush serves the push page: GET shows the form, POST sends.
func (s *Sandbox) servePush(w http.ResponseWriter, r *http.Request) {
	data := pushPageData{
		On:     s.callback.URL != "",
		Target: s.callback.URL,
		Modes:  []string{pushPlaintext},
		Users:  users,
		Kinds:  pushKinds,
		Form:   pushForm{OpenID: users[0].OpenID, Kind: "text", Content: "你好"},
		Menu:   s.storedMenuButtons(),
	}
	for _, m := range slices.Backward(s.CustomMessages()) {
		data.Custom = append(data.Custom, string(m))
	}
	if s.callback.EncodingAESKey != "" {
		// The appliance refuses plaintext pushes once a key is set, as an
		// account switched to 兼容/安全模式 never sends them.
		data.Modes = []string{pushSafe, pushCompatible}
	}
	data.Form.Mode = data.Modes[0]
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		renderPage(w, http.StatusOK, "push", data)
	case http.MethodPost:
		if !data.On {
			renderPage(w, http.StatusConflict, "push", data)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		if err := r.ParseForm(); err != nil {
			http.Error(w, "sandbox: bad form", http.StatusBadRequest)
			return
		}
		f := pushForm{
			OpenID:   r.PostForm.Get("openid"),
			Kind:     r.PostForm.Get("kind"),
			Content:  r.PostForm.Get("content"),
			EventKey: r.PostForm.Get("event_key"),
			Mode:     r.PostForm.Get("mode"),
		}
		if kind, key, ok := strings.Cut(r.PostForm.Get("menu"), ":"); ok {
			// A menu button was tapped: its event, whatever the form said.
			f.Kind, f.EventKey = kind, key
		}
		if err := checkPushForm(f, data.Modes); err != nil {
			http.Error(w, "sandbox: "+err.Error(), http.StatusBadRequest)
			return
		}
		data.Form = f
		data.Result = s.push(r.Context(), f, baseURL(r))
		renderPage(w, http.StatusOK, "push", data)
	default:
		w.Header().Set("Allow", "GET, POST")
		http.Error(w, "sandbox: use GET or POST", http.StatusMethodNotAllowed)
	}
}

func checkPushForm(f pushForm, modes []string) error {
	if _, ok := findUser(f.OpenID); !ok {
		return errors.New("unknown openid")
	}
	known := false
	for _, k := range pushKinds {
		known = known || k.Value == f.Kind
	}
	if !known {
		return fmt.Errorf("unknown kind %q", f.Kind)
	}
	okMode := false
	for _, m := range modes {
		okMode = okMode || m == f.Mode
	}
	if !okMode {
		return fmt.Errorf("mode %q is not available", f.Mode)
	}
	if len(f.Content) > 4096 || len(f.EventKey) > 1024 {
		return errors.New("content or event key too long")
	}
	return nil
}

// push sends f to the callback and reports the exchange. Failures are part
// of the report: the page is for finding out what goes wrong.
func (s *Sandbox) push(ctx context.Context, f pushForm, base string) *pushResult {
	res := &pushResult{}
	now := s.now()
	msg := buildPushMessage(f, now, base)
	res.Message = msg

	ts := strconv.FormatInt(now.Unix(), 10)
	nonce := randomDigits(10)
	q := callback.Query{
		Signature: callback.Signature(s.callback.Token, ts, nonce),
		Timestamp: ts,
		Nonce:     nonce,
		OpenID:    f.OpenID,
	}
	body := msg
	var crypter *callback.Crypter
	if f.Mode != pushPlaintext {
		var err error
		crypter, err = callback.NewCrypter(s.callback.EncodingAESKey, s.appID)
		if err != nil {
			res.Err = "callback.encoding_aes_key: " + err.Error()
			return res
		}
		enc, err := crypter.Encrypt(rand.Reader, []byte(msg))
		if err != nil {
			res.Err = err.Error()
			return res
		}
		q.EncryptType = "aes"
		q.MsgSignature = callback.Signature(s.callback.Token, ts, nonce, enc)
		encNode := "<Encrypt><![CDATA[" + enc + "]]></Encrypt>"
		if f.Mode == pushCompatible {
			body = strings.Replace(msg, "</xml>", encNode+"\n</xml>", 1)
		} else {
			body = "<xml>\n<ToUserName><![CDATA[" + OriginalID + "]]></ToUserName>\n" + encNode + "\n</xml>"
		}
	}
	url := s.callback.URL + "?" + q.Values().Encode()
	res.Request = "POST " + url
	res.RequestBody = body

	ctx, cancel := context.WithTimeout(ctx, pushTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		res.Err = err.Error()
		return res
	}
	req.Header.Set("Content-Type", "text/xml")
	req.Header.Set("User-Agent", "Mozilla/4.0 (wxappliance sandbox push)")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		res.Err = "发送失败 sending failed: " + err.Error()
		return res
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		res.Err = "读取回复失败 reading the answer failed: " + err.Error()
	}
	res.Status = resp.StatusCode
	res.ResponseBody = string(raw)
	s.describeReply(res, raw, crypter)
	return res
}

// describeReply fills the reply and a note on what WeChat would make of
// the answer.
func (s *Sandbox) describeReply(res *pushResult, raw []byte, crypter *callback.Crypter) {
	trimmed := bytes.TrimSpace(raw)
	switch {
	case res.Status != http.StatusOK:
		res.Note = "非200回复：微信会重试，用户看到“该公众号暂时无法提供服务”。 Not 200: WeChat retries, then tells the user the account cannot serve."
		return
	case len(trimmed) == 0 || string(trimmed) == callback.Success:
		res.Note = "success：没有回复，微信不会重试。 No reply; WeChat does not retry."
		return
	case crypter == nil:
		res.Reply = string(raw)
		res.Note = "明文回复 Plaintext reply."
		return
	}
	var env struct {
		Encrypt      string `xml:"Encrypt"`
		MsgSignature string `xml:"MsgSignature"`
		TimeStamp    string `xml:"TimeStamp"`
		Nonce        string `xml:"Nonce"`
	}
	if err := xml.Unmarshal(raw, &env); err != nil || env.Encrypt == "" {
		res.Err = "加密模式下回复未加密 the reply to an encrypted message is not encrypted"
		res.Reply = string(raw)
		return
	}
	if !callback.CheckSignature(env.MsgSignature, s.callback.Token, env.TimeStamp, env.Nonce, env.Encrypt) {
		res.Err = "回复的 MsgSignature 不正确 the reply's MsgSignature is wrong"
	}
	plain, err := crypter.Decrypt(env.Encrypt)
	if err != nil {
		res.Err = "回复解密失败 the reply does not decrypt: " + err.Error()
		return
	}
	res.Reply = string(plain)
	if res.Err == "" {
		res.Note = "加密回复，签名正确，已解密。 Encrypted reply, signature verified, decrypted."
	}
}

// buildPushMessage renders the message or event f as WeChat's XML.
func buildPushMessage(f pushForm, now time.Time, base string) string {
	var b strings.Builder
	cdata := func(name, v string) {
		b.WriteString("<" + name + "><![CDATA[")
		b.WriteString(strings.ReplaceAll(v, "]]>", "]]]]><![CDATA[>"))
		b.WriteString("]]></" + name + ">\n")
	}
	plain := func(name, v string) { b.WriteString("<" + name + ">" + v + "</" + name + ">\n") }
	event := func(name string) {
		cdata("MsgType", "event")
		cdata("Event", name)
	}
	b.WriteString("<xml>\n")
	cdata("ToUserName", OriginalID)
	cdata("FromUserName", f.OpenID)
	plain("CreateTime", strconv.FormatInt(now.Unix(), 10))
	msgID := strconv.FormatUint(randomMsgID(), 10)
	switch f.Kind {
	case "text":
		cdata("MsgType", "text")
		cdata("Content", f.Content)
		plain("MsgId", msgID)
	case "image":
		cdata("MsgType", "image")
		cdata("PicUrl", base+"/"+filesPrefix+"headimg/"+f.OpenID+"/132")
		cdata("MediaId", MediaImage)
		plain("MsgId", msgID)
	case "voice":
		cdata("MsgType", "voice")
		cdata("MediaId", MediaVoice)
		cdata("Format", "amr")
		cdata("Recognition", f.Content)
		plain("MsgId", msgID)
	case "location":
		cdata("MsgType", "location")
		plain("Location_X", "23.134521")
		plain("Location_Y", "113.358803")
		plain("Scale", "20")
		cdata("Label", "广州市天河区")
		plain("MsgId", msgID)
	case "link":
		cdata("MsgType", "link")
		cdata("Title", "沙箱链接 Sandbox link")
		cdata("Description", f.Content)
		cdata("Url", "https://example.com/article")
		plain("MsgId", msgID)
	case "subscribe":
		event("subscribe")
	case "subscribe_qr":
		event("subscribe")
		cdata("EventKey", "qrscene_"+f.EventKey)
		cdata("Ticket", "sandbox-ticket-"+f.EventKey)
	case "SCAN":
		event("SCAN")
		cdata("EventKey", f.EventKey)
		cdata("Ticket", "sandbox-ticket-"+f.EventKey)
	case "unsubscribe":
		event("unsubscribe")
	case "CLICK":
		event("CLICK")
		cdata("EventKey", f.EventKey)
	case "VIEW":
		event("VIEW")
		cdata("EventKey", f.EventKey)
	case "LOCATION":
		event("LOCATION")
		plain("Latitude", "23.137466")
		plain("Longitude", "113.352425")
		plain("Precision", "119.385040")
	case "subscribe_msg_popup_event":
		event(f.Kind)
		b.WriteString("<SubscribeMsgPopupEvent><List>\n")
		cdata("TemplateId", subscriptionTemplate(f))
		cdata("SubscribeStatusString", "accept")
		plain("PopupScene", "2")
		b.WriteString("</List></SubscribeMsgPopupEvent>\n")
	case "subscribe_msg_change_event":
		event(f.Kind)
		b.WriteString("<SubscribeMsgChangeEvent><List>\n")
		cdata("TemplateId", subscriptionTemplate(f))
		cdata("SubscribeStatusString", "reject")
		b.WriteString("</List></SubscribeMsgChangeEvent>\n")
	case "subscribe_msg_sent_event":
		event(f.Kind)
		b.WriteString("<SubscribeMsgSentEvent><List>\n")
		cdata("TemplateId", subscriptionTemplate(f))
		plain("MsgID", msgID)
		plain("ErrorCode", "0")
		cdata("ErrorStatus", "success")
		b.WriteString("</List></SubscribeMsgSentEvent>\n")
	}
	b.WriteString("</xml>")
	return b.String()
}

// subscriptionTemplate is the template id a subscription event names: the
// form's event key, or a sandbox one.
func subscriptionTemplate(f pushForm) string {
	if f.EventKey != "" {
		return f.EventKey
	}
	return "sandbox-template-1"
}

// randomMsgID is a random positive 63-bit MsgId: ids must not repeat
// across restarts, or the callback would take a new push for a retry of
// one it answered before.
func randomMsgID() uint64 {
	var b [8]byte
	rand.Read(b[:])
	return binary.BigEndian.Uint64(b[:]) >> 1
}

// randomDigits returns n random decimal digits, like WeChat's nonces.
func randomDigits(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	for i := range b {
		b[i] = '0' + b[i]%10
	}
	return string(b)
}
