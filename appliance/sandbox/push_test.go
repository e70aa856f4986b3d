package sandbox

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/100steps/wxappliance/callback"
	"github.com/100steps/wxappliance/kv/kvtest"
)

const (
	pushToken = "pushtoken1"
	pushKey   = "PushTestKeyPushTestKeyPushTestKeyPushTest00"
)

// recorder is a callback subscriber that keeps the last message and
// answers with its content echoed.
type recorder struct {
	mu   sync.Mutex
	last *callback.Message
}

func (r *recorder) Deliver(_ context.Context, m *callback.Message) (*callback.Reply, bool, error) {
	r.mu.Lock()
	r.last = m
	r.mu.Unlock()
	return &callback.Reply{Type: "text", Content: "got " + m.MsgType + " " + m.Event}, true, nil
}

func (r *recorder) message() *callback.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last
}

// pushEnv is a sandbox whose push page targets a real callback.Service
// behind a test server (the appliance's transport, reduced to the calls).
type pushEnv struct {
	*env
	rec      *recorder
	override http.HandlerFunc // when set, the callback server answers with it
}

func newPushEnv(t *testing.T, key string) *pushEnv {
	t.Helper()
	store := kvtest.Badger(t)
	d, err := callback.NewDispatcher(callback.Rules{})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := callback.New(store, d, callback.Config{Token: pushToken, AppID: DefaultAppID, EncodingAESKey: key})
	if err != nil {
		t.Fatal(err)
	}
	pe := &pushEnv{rec: &recorder{}}
	svc.SetSubscriber(pe.rec)
	cb := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if pe.override != nil {
			pe.override(w, r)
			return
		}
		body, _ := io.ReadAll(r.Body)
		ans, err := svc.Handle(r.Context(), callback.ParseQuery(r.URL.Query()), body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
		w.Header().Set("Content-Type", ans.ContentType())
		w.Write(ans.Body)
	}))
	t.Cleanup(cb.Close)

	// Each push is a second after the previous one: two events of one
	// kind from one user in the same second are one event to WeChat's
	// dedupe rule (sender, CreateTime, Event), and the callback would
	// answer the second from its store.
	var ticks atomic.Int64
	start := time.Now()
	sb := New(Options{
		Callback: CallbackTarget{URL: cb.URL + "/callback", Token: pushToken, EncodingAESKey: key},
		Now:      func() time.Time { return start.Add(time.Duration(ticks.Add(1)) * time.Second) },
	})
	srv := httptest.NewServer(sb)
	t.Cleanup(srv.Close)
	pe.env = &env{t: t, sb: sb, srv: srv}
	return pe
}

func (e *pushEnv) push(form url.Values) answer {
	e.t.Helper()
	return e.do(http.MethodPost, "push", form.Encode())
}

// do with a form body.
func (e *pushEnv) do(method, path, body string) answer {
	e.t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+"/"+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, resp.Header, b}
}

func TestPushKinds(t *testing.T) {
	// With a key the page offers the encrypted modes, without one plaintext.
	envs := map[string]*pushEnv{pushSafe: newPushEnv(t, pushKey), pushPlaintext: newPushEnv(t, "")}
	envs[pushCompatible] = envs[pushSafe]
	tests := []struct {
		kind  string
		check func(m *callback.Message) bool
	}{
		{"text", func(m *callback.Message) bool {
			return m.MsgType == "text" && m.Content == "你好 ]]> <x>" && m.MsgID != ""
		}},
		{"image", func(m *callback.Message) bool {
			return m.MsgType == "image" && m.MediaID == MediaImage && strings.HasPrefix(m.PicURL, "http")
		}},
		{"voice", func(m *callback.Message) bool { return m.MsgType == "voice" && m.Recognition == "你好 ]]> <x>" }},
		{"location", func(m *callback.Message) bool { return m.MsgType == "location" && m.LocationX != "" && m.Label != "" }},
		{"link", func(m *callback.Message) bool { return m.MsgType == "link" && m.URL != "" && m.Title != "" }},
		{"subscribe", func(m *callback.Message) bool { return m.IsEvent("subscribe") && m.EventKey == "" }},
		{"subscribe_qr", func(m *callback.Message) bool {
			return m.IsEvent("subscribe") && m.EventKey == "qrscene_42" && m.Scene == "42" && m.Ticket != ""
		}},
		{"SCAN", func(m *callback.Message) bool { return m.IsEvent("SCAN") && m.Scene == "42" && m.Ticket != "" }},
		{"unsubscribe", func(m *callback.Message) bool { return m.IsEvent("unsubscribe") }},
		{"CLICK", func(m *callback.Message) bool { return m.IsEvent("CLICK") && m.EventKey == "42" }},
		{"VIEW", func(m *callback.Message) bool { return m.IsEvent("VIEW") && m.EventKey == "42" }},
		{"LOCATION", func(m *callback.Message) bool { return m.IsEvent("LOCATION") && m.Latitude != "" && m.Precision != "" }},
		{"subscribe_msg_popup_event", func(m *callback.Message) bool {
			return m.IsEvent(callback.EventSubscribeMsgPopup) && len(m.Subscriptions) == 1 &&
				m.Subscriptions[0].TemplateID == "42" && m.Subscriptions[0].Status == "accept"
		}},
		{"subscribe_msg_change_event", func(m *callback.Message) bool {
			return m.IsEvent(callback.EventSubscribeMsgChange) && len(m.Subscriptions) == 1 && m.Subscriptions[0].Status == "reject"
		}},
		{"subscribe_msg_sent_event", func(m *callback.Message) bool {
			return m.IsEvent(callback.EventSubscribeMsgSent) && len(m.Subscriptions) == 1 &&
				m.Subscriptions[0].ErrorStatus == "success" && m.Subscriptions[0].MsgID != ""
		}},
	}
	if len(tests) != len(pushKinds) {
		t.Fatalf("%d kinds tested, %d offered", len(tests), len(pushKinds))
	}
	for _, mode := range []string{pushSafe, pushCompatible, pushPlaintext} {
		for _, tt := range tests {
			t.Run(mode+" "+tt.kind, func(t *testing.T) {
				e := envs[mode]
				a := e.push(url.Values{"openid": {OpenIDAhua}, "kind": {tt.kind}, "content": {"你好 ]]> <x>"}, "event_key": {"42"}, "mode": {mode}})
				page := string(a.Body)
				if a.Status != 200 || strings.Contains(page, `id="error"`) || !strings.Contains(page, `data-status="200"`) {
					t.Fatalf("%d:\n%s", a.Status, page)
				}
				m := e.rec.message()
				if m == nil || !tt.check(m) {
					t.Fatalf("callback received %+v", m)
				}
				if m.FromUserName != OpenIDAhua || m.ToUserName != OriginalID || m.CreateTime == 0 {
					t.Fatalf("addressing %+v", m)
				}
				want := "got " + m.MsgType + " " + m.Event
				if !strings.Contains(page, want) {
					t.Fatalf("page does not show the reply %q:\n%s", want, page)
				}
				if mode != pushPlaintext && !strings.Contains(page, "signature verified, decrypted") {
					t.Fatalf("encrypted reply not verified:\n%s", page)
				}
			})
		}
	}
}

func TestPushPage(t *testing.T) {
	e := newPushEnv(t, pushKey)
	a := e.get("push", nil)
	page := string(a.Body)
	if a.Status != 200 || !strings.Contains(page, `name="openid"`) || !strings.Contains(page, OpenIDTom) ||
		!strings.Contains(page, `value="safe"`) || !strings.Contains(page, `value="compatible"`) {
		t.Fatalf("form: %d\n%s", a.Status, page)
	}
	if strings.Contains(page, pushToken) || strings.Contains(page, pushKey) {
		t.Fatal("the page shows the token or the key")
	}
	if idx := e.get("", nil); !strings.Contains(string(idx.Body), `href="push"`) {
		t.Fatalf("index does not link the push page:\n%s", idx.Body)
	}

	for name, form := range map[string]url.Values{
		"unknown user": {"openid": {"oSBX_nobody"}, "kind": {"text"}, "mode": {"safe"}},
		"unknown kind": {"openid": {OpenIDTom}, "kind": {"sticker"}, "mode": {"safe"}},
		"unknown mode": {"openid": {OpenIDTom}, "kind": {"text"}, "mode": {"aes"}},
	} {
		if a := e.push(form); a.Status != http.StatusBadRequest {
			t.Errorf("%s: status %d", name, a.Status)
		}
	}
	if a := e.do(http.MethodDelete, "push", ""); a.Status != http.StatusMethodNotAllowed {
		t.Errorf("DELETE: %d", a.Status)
	}
}

func TestPushWithoutKeyOffersPlaintextOnly(t *testing.T) {
	e := newPushEnv(t, "")
	if page := string(e.get("push", nil).Body); strings.Contains(page, `value="safe"`) {
		t.Fatalf("safe mode offered without a key:\n%s", page)
	}
	if a := e.push(url.Values{"openid": {OpenIDTom}, "kind": {"text"}, "content": {"x"}, "mode": {"safe"}}); a.Status != http.StatusBadRequest {
		t.Fatalf("safe mode without a key: %d", a.Status)
	}
	a := e.push(url.Values{"openid": {OpenIDTom}, "kind": {"text"}, "content": {"x"}, "mode": {"plaintext"}})
	if a.Status != 200 || !strings.Contains(string(a.Body), "got text") || strings.Contains(string(a.Body), "msg_signature") {
		t.Fatalf("%d:\n%s", a.Status, a.Body)
	}
}

func TestPushReportsBadAnswers(t *testing.T) {
	e := newPushEnv(t, pushKey)
	form := url.Values{"openid": {OpenIDTom}, "kind": {"text"}, "content": {"x"}, "mode": {"safe"}}
	tests := []struct {
		name    string
		handler http.HandlerFunc
		want    string
	}{
		{"403", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "no", http.StatusForbidden) },
			"Not 200"},
		{"plaintext reply to an encrypted message", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "<xml><MsgType><![CDATA[text]]></MsgType></xml>")
		}, "is not encrypted"},
		{"success", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "success") },
			"No reply"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.override = tt.handler
			defer func() { e.override = nil }()
			a := e.push(form)
			if a.Status != 200 || !strings.Contains(string(a.Body), tt.want) {
				t.Fatalf("%d, page lacks %q:\n%s", a.Status, tt.want, a.Body)
			}
		})
	}
}

func TestPushCallbackOff(t *testing.T) {
	e := newEnv(t)
	a := e.get("push", nil)
	if a.Status != 200 || !strings.Contains(string(a.Body), `id="off"`) {
		t.Fatalf("%d:\n%s", a.Status, a.Body)
	}
	a = e.post("push", nil, "openid="+OpenIDTom+"&kind=text&mode=plaintext")
	if a.Status != http.StatusConflict {
		t.Fatalf("push with the callback off: %d", a.Status)
	}
}
