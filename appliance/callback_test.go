package appliance

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"encoding/xml"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/100steps/wxappliance/appliance/logtest"
	"github.com/100steps/wxappliance/appliance/sandbox"
	"github.com/100steps/wxappliance/callback"
	"github.com/100steps/wxappliance/kv/kvtest"
)

// callbackEnv is a sandbox-mode appliance with the callback on (the
// sandbox's token and key), on real Badger, behind a real server.
type callbackEnv struct {
	t    *testing.T
	a    *Appliance
	srv  *httptest.Server
	cfg  Config
	logs *logtest.Buffer
}

func newCallbackEnv(t *testing.T, mutate func(*Config)) *callbackEnv {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.WeChat.Sandbox = true
	cfg.OAuth.AllowedReturnHosts = []string{"127.0.0.1"}
	cfg.Callback.Rules = CallbackRules{
		Subscribe: &ReplyConfig{Content: "欢迎 welcome"},
		Keywords: []KeywordConfig{
			{Keyword: "帮助", ReplyConfig: ReplyConfig{Content: "帮助内容 ]]> <b>"}},
			{Keyword: "news", Match: "contains", ReplyConfig: ReplyConfig{Type: "news", Articles: []ArticleConfig{{Title: "T", URL: "https://x/"}}}},
		},
	}
	cfg.Callback.VerifyFiles = map[string]string{"MP_verify_AbC123.txt": "AbC123"}
	if mutate != nil {
		mutate(&cfg)
	}
	cfg.applySandboxDefaults()
	// What Serve does: the sandbox and the callback over loopback.
	cfg = resolveAddresses(cfg, ln.Addr().String())
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	store := kvtest.Badger(t)
	log, logs := logtest.New()
	a, err := New(cfg, Options{Store: store, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(a.Handler())
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return &callbackEnv{t: t, a: a, srv: srv, cfg: cfg, logs: logs}
}

type httpAnswer struct {
	status int
	header http.Header
	body   []byte
}

func (e *callbackEnv) do(method, path string, q url.Values, body []byte) httpAnswer {
	e.t.Helper()
	u := e.srv.URL + path
	if q != nil {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequest(method, u, bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return httpAnswer{resp.StatusCode, resp.Header, b}
}

func now() string { return strconv.FormatInt(time.Now().Unix(), 10) }

// message is a text message to the sandbox account.
func message(msgID, content string) string {
	return `<xml><ToUserName><![CDATA[` + sandbox.OriginalID + `]]></ToUserName><FromUserName><![CDATA[` + sandbox.OpenIDZhangsan +
		`]]></FromUserName><CreateTime>` + now() + `</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[` + content +
		`]]></Content><MsgId>` + msgID + `</MsgId></xml>`
}

// signed is the query of a plaintext push or a verification.
func (e *callbackEnv) signed(ts string) url.Values {
	nonce := "123456"
	return callback.Query{Signature: callback.Signature(e.cfg.Callback.Token, ts, nonce), Timestamp: ts, Nonce: nonce}.Values()
}

// sealed is the query and body of a push in safe mode (or compatible).
func (e *callbackEnv) sealed(msg string, compatible bool) (url.Values, []byte) {
	e.t.Helper()
	c, err := callback.NewCrypter(e.cfg.Callback.EncodingAESKey, e.cfg.WeChat.AppID)
	if err != nil {
		e.t.Fatal(err)
	}
	enc, err := c.Encrypt(rand.Reader, []byte(msg))
	if err != nil {
		e.t.Fatal(err)
	}
	ts, nonce := now(), "654321"
	q := callback.Query{
		Signature:    callback.Signature(e.cfg.Callback.Token, ts, nonce),
		MsgSignature: callback.Signature(e.cfg.Callback.Token, ts, nonce, enc),
		Timestamp:    ts, Nonce: nonce, EncryptType: "aes",
	}.Values()
	node := "<Encrypt><![CDATA[" + enc + "]]></Encrypt>"
	if compatible {
		return q, []byte(strings.Replace(msg, "</xml>", node+"</xml>", 1))
	}
	return q, []byte("<xml><ToUserName><![CDATA[" + sandbox.OriginalID + "]]></ToUserName>" + node + "</xml>")
}

// open decrypts an encrypted reply after checking its signature.
func (e *callbackEnv) open(body []byte) string {
	e.t.Helper()
	var env struct{ Encrypt, MsgSignature, TimeStamp, Nonce string }
	if err := xml.Unmarshal(body, &env); err != nil || env.Encrypt == "" {
		e.t.Fatalf("not an encrypted reply (%v): %s", err, body)
	}
	if !callback.CheckSignature(env.MsgSignature, e.cfg.Callback.Token, env.TimeStamp, env.Nonce, env.Encrypt) {
		e.t.Fatalf("reply signature: %s", body)
	}
	c, _ := callback.NewCrypter(e.cfg.Callback.EncodingAESKey, e.cfg.WeChat.AppID)
	plain, err := c.Decrypt(env.Encrypt)
	if err != nil {
		e.t.Fatal(err)
	}
	return string(plain)
}

// wantEnvelope checks an error answer: status and {"status":N,"msg":..,"data":null}.
func wantEnvelope(t *testing.T, a httpAnswer, status int) {
	t.Helper()
	if a.status != status {
		t.Fatalf("status %d, want %d: %s", a.status, status, a.body)
	}
	var env struct {
		Status int     `json:"status"`
		Msg    string  `json:"msg"`
		Data   *string `json:"data"`
	}
	if err := json.Unmarshal(a.body, &env); err != nil || env.Status != status || env.Msg == "" || env.Data != nil {
		t.Fatalf("not the error envelope (%v): %s", err, a.body)
	}
}

func TestCallbackVerification(t *testing.T) {
	e := newCallbackEnv(t, nil)
	q := e.signed(now())
	q.Set("echostr", "6154926484251437032")
	a := e.do(http.MethodGet, "/callback", q, nil)
	if a.status != 200 || string(a.body) != "6154926484251437032" || !strings.HasPrefix(a.header.Get("Content-Type"), "text/plain") {
		t.Fatalf("verification: %d %q %s", a.status, a.body, a.header.Get("Content-Type"))
	}
	if a.header.Get("X-Content-Type-Options") != "nosniff" {
		t.Fatal("echostr served without nosniff")
	}

	q.Set("signature", strings.Repeat("0", 40))
	a = e.do(http.MethodGet, "/callback", q, nil)
	wantEnvelope(t, a, http.StatusForbidden)
	if strings.Contains(string(a.body), "6154926484251437032") {
		t.Fatal("echostr echoed with a bad signature")
	}

	q = e.signed(strconv.FormatInt(time.Now().Add(-time.Hour).Unix(), 10))
	q.Set("echostr", "x")
	wantEnvelope(t, e.do(http.MethodGet, "/callback", q, nil), http.StatusForbidden)
}

// plainCallbackEnv is an account in 明文模式: a token and no key.
func plainCallbackEnv(t *testing.T) *callbackEnv {
	return newCallbackEnv(t, func(c *Config) { c.Callback.Token = "plaintoken" })
}

func TestCallbackMessages(t *testing.T) {
	e := newCallbackEnv(t, nil)
	plain := plainCallbackEnv(t)
	plainQ := plain.signed(now())

	t.Run("plaintext refused when a key is set", func(t *testing.T) {
		a := e.do(http.MethodPost, "/callback", e.signed(now()), []byte(message("0", "帮助")))
		wantEnvelope(t, a, http.StatusForbidden)
	})
	t.Run("plaintext", func(t *testing.T) {
		a := plain.do(http.MethodPost, "/callback", plainQ, []byte(message("1", "帮助")))
		if a.status != 200 || !strings.HasPrefix(a.header.Get("Content-Type"), "text/xml") {
			t.Fatalf("%d %s: %s", a.status, a.header.Get("Content-Type"), a.body)
		}
		m, err := callback.ParseMessage(a.body)
		if err != nil || m.Content != "帮助内容 ]]> <b>" || m.ToUserName != sandbox.OpenIDZhangsan || m.FromUserName != sandbox.OriginalID {
			t.Fatalf("reply %+v (%v): %s", m, err, a.body)
		}
	})
	for _, compatible := range []bool{false, true} {
		t.Run("encrypted, compatible="+strconv.FormatBool(compatible), func(t *testing.T) {
			q, body := e.sealed(message("2"+strconv.FormatBool(compatible), "what news today"), compatible)
			a := e.do(http.MethodPost, "/callback", q, body)
			if a.status != 200 {
				t.Fatalf("%d: %s", a.status, a.body)
			}
			m, err := callback.ParseMessage([]byte(e.open(a.body)))
			if err != nil || m.MsgType != "news" {
				t.Fatalf("reply %+v (%v)", m, err)
			}
		})
	}
	t.Run("no rule: success", func(t *testing.T) {
		a := plain.do(http.MethodPost, "/callback", plainQ, []byte(message("3", "nothing matches")))
		if a.status != 200 || string(a.body) != "success" || !strings.HasPrefix(a.header.Get("Content-Type"), "text/plain") {
			t.Fatalf("%d %q", a.status, a.body)
		}
	})
	t.Run("retry gets the same bytes", func(t *testing.T) {
		q, body := e.sealed(message("4", "帮助"), false)
		first := e.do(http.MethodPost, "/callback", q, body)
		retry := e.do(http.MethodPost, "/callback", q, body)
		if first.status != 200 || !bytes.Equal(first.body, retry.body) {
			t.Fatalf("retry differs:\n%s\n%s", first.body, retry.body)
		}
	})
}

func TestCallbackBadRequests(t *testing.T) {
	e := newCallbackEnv(t, nil)
	ts := now()
	badB64Q := callback.Query{MsgSignature: callback.Signature(e.cfg.Callback.Token, ts, "1", "%%%"), Timestamp: ts, Nonce: "1", EncryptType: "aes"}.Values()
	tests := []struct {
		name   string
		method string
		q      url.Values
		body   []byte
		status int
	}{
		{"malformed XML", http.MethodPost, e.signed(ts), []byte("<xml><Content>"), http.StatusBadRequest},
		{"JSON body", http.MethodPost, e.signed(ts), []byte(`{"a":1}`), http.StatusBadRequest},
		{"bad base64", http.MethodPost, badB64Q, []byte("<xml><Encrypt>%%%</Encrypt></xml>"), http.StatusBadRequest},
		{"bad signature", http.MethodPost, url.Values{"signature": {"x"}, "timestamp": {ts}, "nonce": {"1"}}, []byte(message("9", "x")), http.StatusForbidden},
		{"no query", http.MethodPost, nil, []byte(message("9", "x")), http.StatusForbidden},
		{"stale timestamp", http.MethodPost, e.signed(strconv.FormatInt(time.Now().Add(-10*time.Minute).Unix(), 10)), []byte(message("9", "x")), http.StatusForbidden},
		{"over 1 MiB", http.MethodPost, e.signed(ts), append([]byte("<xml><Content>"), bytes.Repeat([]byte("a"), callback.MaxBodyBytes)...), http.StatusRequestEntityTooLarge},
		{"PUT", http.MethodPut, e.signed(ts), []byte(message("9", "x")), http.StatusMethodNotAllowed},
		{"DELETE", http.MethodDelete, nil, nil, http.StatusMethodNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := e.do(tt.method, "/callback", tt.q, tt.body)
			wantEnvelope(t, a, tt.status)
			if tt.status == http.StatusMethodNotAllowed && a.header.Get("Allow") != "GET, POST" {
				t.Fatalf("Allow: %q", a.header.Get("Allow"))
			}
		})
	}
}

// The answer leaves within callback.reply_timeout whatever the subscriber
// does: "success", before the subscriber returns.
func TestCallbackSlowSubscriber(t *testing.T) {
	e := newCallbackEnv(t, func(c *Config) { c.Callback.ReplyTimeout = Duration(200 * time.Millisecond) })
	release := make(chan struct{})
	returned := make(chan struct{})
	e.a.Callback().SetSubscriber(slowSubscriber{release, returned})
	q, body := e.sealed(message("10", "帮助"), false)
	a := e.do(http.MethodPost, "/callback", q, body)
	select {
	case <-returned:
		t.Fatal("subscriber returned before the answer")
	default:
	}
	close(release)
	select {
	case <-returned:
	case <-time.After(5 * time.Second):
		t.Fatal("the subscriber was never called")
	}
	if a.status != 200 || string(a.body) != "success" {
		t.Fatalf("%d %q, want success", a.status, a.body)
	}
}

type slowSubscriber struct{ release, returned chan struct{} }

func (s slowSubscriber) Deliver(ctx context.Context, _ *callback.Message) (*callback.Reply, bool, error) {
	defer close(s.returned)
	<-s.release
	return &callback.Reply{Type: "text", Content: "late"}, true, nil
}

func TestVerifyFiles(t *testing.T) {
	e := newCallbackEnv(t, nil)
	a := e.do(http.MethodGet, "/MP_verify_AbC123.txt", nil, nil)
	if a.status != 200 || string(a.body) != "AbC123" || !strings.HasPrefix(a.header.Get("Content-Type"), "text/plain") {
		t.Fatalf("%d %q %s", a.status, a.body, a.header.Get("Content-Type"))
	}
	if a := e.do(http.MethodGet, "/MP_verify_Other.txt", nil, nil); a.status != http.StatusNotFound {
		t.Fatalf("unlisted file: %d", a.status)
	}
}

func TestCallbackOffWithoutToken(t *testing.T) {
	e := newCallbackEnv(t, func(c *Config) {
		c.WeChat.Sandbox = false
		c.WeChat.AppID, c.WeChat.AppSecret = "wx1", "secret"
	})
	if e.a.Callback() != nil {
		t.Fatal("callback built without a token")
	}
	q := e.signed(now())
	q.Set("echostr", "x")
	if a := e.do(http.MethodGet, "/callback", q, nil); a.status != http.StatusNotFound {
		t.Fatalf("callback path answered %d with the callback off", a.status)
	}
	if a := e.do(http.MethodGet, "/MP_verify_AbC123.txt", nil, nil); a.status != 200 {
		t.Fatalf("verify file with the callback off: %d", a.status)
	}
}

// The sandbox push page sends to the appliance's own callback over
// loopback and shows the decrypted reply.
func TestSandboxPushThroughAppliance(t *testing.T) {
	keyed, plain := newCallbackEnv(t, nil), plainCallbackEnv(t)
	tests := []struct {
		kind, content, mode, want string
	}{
		{"text", "帮助", "safe", "帮助内容 ]]]]&gt;&lt;![CDATA[&gt; &lt;b&gt;"},
		{"text", "帮助", "compatible", "帮助内容"},
		{"text", "帮助", "plaintext", "帮助内容"},
		{"subscribe_qr", "", "safe", "欢迎 welcome"},
		{"LOCATION", "", "safe", "success"},
	}
	for _, tt := range tests {
		t.Run(tt.kind+" "+tt.mode, func(t *testing.T) {
			e := keyed
			if tt.mode == "plaintext" {
				e = plain
			}
			form := url.Values{"openid": {sandbox.OpenIDXiaoming}, "kind": {tt.kind}, "content": {tt.content}, "event_key": {"42"}, "mode": {tt.mode}}
			resp, err := http.PostForm(e.srv.URL+"/sandbox/push", form)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			page := string(b)
			if resp.StatusCode != 200 || !strings.Contains(page, `data-status="200"`) {
				t.Fatalf("%d: %s", resp.StatusCode, page)
			}
			if !strings.Contains(page, tt.want) {
				t.Fatalf("page lacks %q:\n%s", tt.want, page)
			}
			if strings.Contains(page, `id="error"`) {
				t.Fatalf("page reports an error:\n%s", page)
			}
			if tt.mode != "plaintext" && tt.want != "success" && !strings.Contains(page, "signature verified, decrypted") {
				t.Fatalf("the encrypted reply was not verified and decrypted:\n%s", page)
			}
		})
	}
}

func TestCallbackConfig(t *testing.T) {
	cfg, err := ParseConfig(strings.NewReader(`
[wechat]
sandbox = true
[oauth]
allowed_return_hosts = ["example.com"]
[callback]
token = "tok123"
reply_timeout = "2s"
timestamp_window = "10m"
verify_files = { "MP_verify_X1.txt" = "X1" }
[callback.rules]
subscribe = { content = "hi" }
default = { type = "image", media_id = "m1" }
[[callback.rules.keywords]]
keyword = "a"
type = "news"
articles = [{ title = "t", url = "https://x/" }]
[[callback.rules.keywords]]
keyword = "b"
match = "contains"
content = "bee"
`))
	if err != nil {
		t.Fatal(err)
	}
	cfg.applySandboxDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	cb := cfg.Callback
	if cb.ReplyTimeout.D() != 2*time.Second || cb.TimestampWindow.D() != 10*time.Minute || cb.VerifyFiles["MP_verify_X1.txt"] != "X1" {
		t.Fatalf("callback config %+v", cb)
	}
	if cb.EncodingAESKey != "" {
		t.Fatal("sandbox key applied although a token was set")
	}
	r := cb.Rules.rules()
	if r.Subscribe.Type != "text" || r.Subscribe.Content != "hi" || r.Default.MediaID != "m1" ||
		len(r.Keywords) != 2 || r.Keywords[0].Match != "exact" || r.Keywords[0].Reply.Articles[0].URL != "https://x/" ||
		r.Keywords[1].Match != "contains" || r.Keywords[1].Reply.Content != "bee" {
		t.Fatalf("rules %+v", r)
	}
	if err := r.Validate(); err != nil {
		t.Fatal(err)
	}

	def := DefaultConfig()
	def.WeChat.Sandbox = true
	def.applySandboxDefaults()
	if def.Callback.Token != sandbox.DefaultCallbackToken || def.Callback.EncodingAESKey != sandbox.DefaultEncodingAESKey {
		t.Fatalf("sandbox callback defaults: %+v", def.Callback)
	}
	if def.Callback.ReplyTimeout.D() != 4500*time.Millisecond || def.Callback.TimestampWindow.D() != 5*time.Minute {
		t.Fatalf("defaults %v %v", def.Callback.ReplyTimeout, def.Callback.TimestampWindow)
	}
}

func TestCallbackConfigErrorsNameTheKey(t *testing.T) {
	const pre = "[wechat]\nsandbox = true\n[callback]\n"
	tests := []struct{ name, body, want string }{
		{"reply timeout too long", pre + "reply_timeout = \"5s\"\n", "callback.reply_timeout"},
		{"reply timeout zero", pre + "reply_timeout = \"0s\"\n", "callback.reply_timeout"},
		{"window too short", pre + "timestamp_window = \"10s\"\n", "callback.timestamp_window"},
		{"verify file name", pre + "verify_files = { \"verify.txt\" = \"x\" }\n", `callback.verify_files."verify.txt"`},
		{"verify file path traversal", pre + "verify_files = { \"MP_verify_../x.txt\" = \"x\" }\n", "callback.verify_files"},
		{"verify file empty", pre + "verify_files = { \"MP_verify_A.txt\" = \"\" }\n", `callback.verify_files."MP_verify_A.txt"`},
		{"subscribe type", pre + "[callback.rules]\nsubscribe = { type = \"gif\" }\n", "callback.rules.subscribe"},
		{"default empty text", pre + "[callback.rules]\ndefault = { content = \"\" }\n", "callback.rules.default"},
		{"keyword empty", pre + "[[callback.rules.keywords]]\ncontent = \"x\"\n", "callback.rules.keywords[0].keyword"},
		{"keyword match", pre + "[[callback.rules.keywords]]\nkeyword = \"k\"\nmatch = \"regex\"\ncontent = \"x\"\n", "callback.rules.keywords[0].match"},
		{"keyword reply", pre + "[[callback.rules.keywords]]\nkeyword = \"k\"\ncontent = \"x\"\n[[callback.rules.keywords]]\nkeyword = \"k\"\ntype = \"news\"\n", "callback.rules.keywords[1]"},
		{"keyword unknown field", pre + "[[callback.rules.keywords]]\nkeyword = \"k\"\nreply = \"x\"\n", "callback.rules.keywords.reply"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadConfig(writeConfig(t, tt.body), noEnv)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v does not name %q", err, tt.want)
			}
		})
	}
}
