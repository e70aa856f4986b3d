package appliance_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/100steps/wxappliance/appliance"
	"github.com/100steps/wxappliance/appliance/metrics/metricstest"
	"github.com/100steps/wxappliance/appliance/poll"
	"github.com/100steps/wxappliance/appliance/sandbox"
	"github.com/100steps/wxappliance/callback"
	"github.com/100steps/wxappliance/oauth"
	"github.com/100steps/wxappliance/rpc"
	"github.com/100steps/wxappliance/rpc/client"
)

const opsCallbackToken = "opsCallbackToken42"

// withOps turns on what the operator's views report: the callback in
// plaintext mode and RPC.
func withOps(cfg *appliance.Config) {
	withRPC(cfg)
	cfg.Callback.Token = opsCallbackToken
}

// admin serves the harness's admin listener.
func (h *harness) admin() string {
	h.t.Helper()
	srv := httptest.NewServer(h.app.AdminHandler())
	h.t.Cleanup(srv.Close)
	return srv.URL
}

// fault injects a fault through the sandbox's control endpoint, as a
// script driving a real binary would.
func (h *harness) fault(body string) {
	h.t.Helper()
	resp, err := http.Post(h.up.URL+"/_control/fault", "application/json", strings.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		h.t.Fatalf("fault %s: %d", body, resp.StatusCode)
	}
}

// push sends a plaintext-mode push signed with token and returns the
// HTTP status.
func (h *harness) push(token, xml string) int {
	h.t.Helper()
	ts := unixNow()
	q := callback.Query{Signature: callback.Signature(token, ts, "777"), Timestamp: ts, Nonce: "777"}.Values()
	resp, err := http.Post(h.srv.URL+h.cfg.Callback.Path+"?"+q.Encode(), "text/xml", strings.NewReader(xml))
	if err != nil {
		h.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func unixNow() string { return strconv.FormatInt(time.Now().Unix(), 10) }

func textPush(msgID string) string {
	return `<xml><ToUserName><![CDATA[gh_ops]]></ToUserName><FromUserName><![CDATA[` + sandbox.OpenIDZhangsan + `]]></FromUserName><CreateTime>` +
		unixNow() + `</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[secret words]]></Content><MsgId>` + msgID + `</MsgId></xml>`
}

func eventPush(event string) string {
	return `<xml><ToUserName><![CDATA[gh_ops]]></ToUserName><FromUserName><![CDATA[` + sandbox.OpenIDLisi + `]]></FromUserName><CreateTime>` +
		unixNow() + `</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[` + event + `]]></Event></xml>`
}

func wantSeries(t *testing.T, f metricstest.Families, name string, labels map[string]string, value float64) {
	t.Helper()
	got, ok := f.Value(name, labels)
	if !ok {
		t.Errorf("no series %s%v; have %v", name, labels, f.Labels(name))
		return
	}
	if got != value {
		t.Errorf("%s%v = %v, want %v", name, labels, got, value)
	}
}

// storedValue reads a credential's value from the store, to check that
// nothing shows it.
func (h *harness) storedValue(key string) string {
	h.t.Helper()
	raw, err := h.store.Get(context.Background(), key)
	if err != nil {
		h.t.Fatalf("%s: %v", key, err)
	}
	var tok oauth.Token
	if err := json.Unmarshal(raw, &tok); err != nil || len(tok.Value) < 8 {
		h.t.Fatalf("%s: %s (%v)", key, raw, err)
	}
	return tok.Value
}

// /metrics after requests, a WeChat error, callback pushes and RPC calls:
// each series with its labels and value, read from the parsed exposition.
func TestMetricsExposition(t *testing.T) {
	h := newHarness(t, withOps)
	admin := h.admin()
	b := h.browser()

	for range 2 {
		if r := b.get("/healthz"); r.StatusCode != 200 {
			t.Fatalf("healthz: %d", r.StatusCode)
		}
	}
	if st, _ := b.get("/no/such/page?code=SECRETCODE").envelope(t); st != 404 {
		t.Fatalf("unknown path: %d", st)
	}
	if st, _ := b.post("/auth/user", "", "").envelope(t); st != 405 {
		t.Fatalf("wrong method: %d", st)
	}

	// WeChat refuses the first fetch of the token (40164), then grants it.
	h.fault(`{"endpoint":"cgi-bin/stable_token","errcode":40164,"times":1}`)
	if r := b.get("/readyz"); r.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("readyz with 40164: %d %s", r.StatusCode, r.body)
	}
	if r := b.get("/readyz"); r.StatusCode != http.StatusOK {
		t.Fatalf("readyz: %d %s", r.StatusCode, r.body)
	}

	if st := h.push(opsCallbackToken, textPush("900001")); st != 200 {
		t.Fatalf("push: %d", st)
	}
	if st := h.push(opsCallbackToken, textPush("900001")); st != 200 { // WeChat's retry
		t.Fatalf("retry: %d", st)
	}
	if st := h.push(opsCallbackToken, eventPush("subscribe_msg_popup_event")); st != 200 {
		t.Fatalf("event push: %d", st)
	}
	if st := h.push("a wrong token", textPush("900002")); st != http.StatusForbidden {
		t.Fatalf("forged push: %d", st)
	}

	c := h.rpcDial()
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := rpcCall(t, c, "token.get", nil, &tok); err != nil || tok.AccessToken == "" {
		t.Fatalf("token.get: %v", err)
	}
	var rerr *client.Error
	if err := rpcCall(t, c, "no.such.method", nil, nil); !errors.As(err, &rerr) || rerr.Code != rpc.CodeMethodNotFound {
		t.Fatalf("unknown method: %v", err)
	}
	// A connection registers just after its handshake; the count follows.
	poll.Until(t, "the RPC connection in the gauge", func() bool {
		_, f := scrapeMetrics(t, admin)
		v, _ := f.Value("wxappliance_rpc_connections", nil)
		return v == 1
	})

	raw, f := scrapeMetrics(t, admin)
	if bytes.Contains(raw, []byte(tok.AccessToken)) || bytes.Contains(raw, []byte("SECRETCODE")) || bytes.Contains(raw, []byte(sandbox.DefaultAppSecret)) {
		t.Fatal("/metrics shows a secret")
	}
	http := func(route, status string) map[string]string {
		return map[string]string{"route": route, "status": status}
	}
	wantSeries(t, f, "wxappliance_http_requests_total", http("GET /healthz", "200"), 2)
	wantSeries(t, f, "wxappliance_http_requests_total", http("unmatched", "404"), 1)
	wantSeries(t, f, "wxappliance_http_requests_total", http("/auth/user", "405"), 1)
	wantSeries(t, f, "wxappliance_http_requests_total", http("GET /readyz", "503"), 1)
	wantSeries(t, f, "wxappliance_http_requests_total", http("GET /readyz", "200"), 1)
	wantSeries(t, f, "wxappliance_http_requests_total", http("/callback", "200"), 3)
	wantSeries(t, f, "wxappliance_http_requests_total", http("/callback", "403"), 1)
	wantSeries(t, f, "wxappliance_http_request_duration_seconds", map[string]string{"route": "GET /healthz"}, 2)
	if f.Type("wxappliance_http_request_duration_seconds") != "HISTOGRAM" || f.Type("wxappliance_wechat_call_duration_seconds") != "HISTOGRAM" {
		t.Error("durations are not histograms")
	}
	for _, labels := range f.Labels("wxappliance_http_requests_total") {
		if strings.Contains(labels["route"], "no/such") {
			t.Errorf("a raw path became a route label: %v", labels)
		}
	}

	wantSeries(t, f, "wxappliance_wechat_calls_total", map[string]string{"api": "cgi-bin/stable_token", "errcode": "40164"}, 1)
	wantSeries(t, f, "wxappliance_wechat_calls_total", map[string]string{"api": "cgi-bin/stable_token", "errcode": "0"}, 1)
	wantSeries(t, f, "wxappliance_wechat_call_duration_seconds", map[string]string{"api": "cgi-bin/stable_token"}, 2)
	wantSeries(t, f, "wxappliance_credential_refreshes_total", map[string]string{"credential": "access_token", "result": "40164"}, 1)
	wantSeries(t, f, "wxappliance_credential_refreshes_total", map[string]string{"credential": "access_token", "result": "ok"}, 1)
	if left, ok := f.Value("wxappliance_credential_expiry_seconds", map[string]string{"credential": "access_token"}); !ok || left <= 0 || left > 7200 {
		t.Errorf("access_token expiry %v (%v), want within the 7200 s the sandbox grants", left, ok)
	}
	wantSeries(t, f, "wxappliance_credential_expiry_seconds", map[string]string{"credential": "jsapi_ticket"}, 0)

	push := func(typ, mode, outcome string) map[string]string {
		return map[string]string{"type": typ, "mode": mode, "outcome": outcome}
	}
	wantSeries(t, f, "wxappliance_callback_messages_total", push("text", "plaintext", "empty"), 1)
	wantSeries(t, f, "wxappliance_callback_messages_total", push("text", "plaintext", "duplicate"), 1)
	wantSeries(t, f, "wxappliance_callback_messages_total", push("event", "plaintext", "empty"), 1)
	wantSeries(t, f, "wxappliance_callback_messages_total", push("none", "none", "refused"), 1)
	wantSeries(t, f, "wxappliance_callback_deadline_fallbacks_total", nil, 0)

	wantSeries(t, f, "wxappliance_rpc_connections", nil, 1)
	wantSeries(t, f, "wxappliance_rpc_calls_total", map[string]string{"method": "token.get", "code": "0"}, 1)
	wantSeries(t, f, "wxappliance_rpc_calls_total", map[string]string{"method": "unknown", "code": "-32601"}, 1)

	for _, name := range []string{"wxappliance_storage_size_bytes", "wxappliance_storage_free_bytes", "go_goroutines", "process_resident_memory_bytes"} {
		if _, ok := f[name]; !ok {
			t.Errorf("no %s", name)
		}
	}
	if _, ok := f["wxappliance_storage_errors_total"]; ok {
		t.Error("storage errors counted, yet storage never failed")
	}

	// The store goes away under the callback: it still answers, and the
	// failed writes are counted.
	h.store.Close()
	if st := h.push(opsCallbackToken, textPush("900003")); st != 200 {
		t.Fatalf("push with the store closed: %d", st)
	}
	_, f = scrapeMetrics(t, admin)
	wantSeries(t, f, "wxappliance_storage_errors_total", map[string]string{"op": "put_if_absent"}, 1)
	if n := len(f.Labels("wxappliance_storage_errors_total")); n != 1 {
		t.Errorf("storage errors: %v", f.Labels("wxappliance_storage_errors_total"))
	}
}

func scrapeMetrics(t *testing.T, admin string) ([]byte, metricstest.Families) {
	t.Helper()
	resp, err := http.Get(admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	buf.ReadFrom(resp.Body)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("/metrics: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return buf.Bytes(), metricstest.Parse(t, bytes.NewReader(buf.Bytes()))
}

// /metrics, the status page and pprof are the admin listener's; pprof only
// when server.pprof is on.
func TestOpsRoutesAreAdminOnly(t *testing.T) {
	for _, pprof := range []bool{false, true} {
		name := "pprof off"
		if pprof {
			name = "pprof on"
		}
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, func(c *appliance.Config) { c.Server.Pprof = pprof })
			b := h.browser()
			for _, path := range []string{"/metrics", "/", "/debug/pprof/", "/debug/pprof/cmdline"} {
				if st, _ := b.get(path).envelope(t); st != http.StatusNotFound {
					t.Errorf("public %s: %d, want 404", path, st)
				}
			}
			admin := h.admin()
			for path, want := range map[string]int{
				"/metrics":             200,
				"/":                    200,
				"/nope":                404,
				"/debug/pprof/":        map[bool]int{false: 404, true: 200}[pprof],
				"/debug/pprof/cmdline": map[bool]int{false: 404, true: 200}[pprof],
				"/debug/pprof/heap":    map[bool]int{false: 404, true: 200}[pprof],
			} {
				if r := b.get(admin + path); r.StatusCode != want {
					t.Errorf("admin %s: %d, want %d", path, r.StatusCode, want)
				}
			}
		})
	}
}

func TestPprofNeedsTheAdminListener(t *testing.T) {
	cfg := appliance.DefaultConfig()
	cfg.WeChat.AppID, cfg.WeChat.AppSecret = "wx1", "s"
	cfg.Server.Pprof = true
	cfg.Server.AdminListen = ""
	err := cfg.Validate()
	if err == nil || !strings.Contains(err.Error(), "server.pprof") {
		t.Fatalf("Validate: %v, want an error naming server.pprof", err)
	}
	cfg.Server.AdminListen = "127.0.0.1:8081"
	if err := cfg.Validate(); err != nil && strings.Contains(err.Error(), "server.pprof") {
		t.Fatalf("Validate with an admin listener: %v", err)
	}
}

// The status page after real fetches of both credentials shows their
// times, and no value: not the token, the ticket, the secret or the keys.
func TestStatusPageShowsNoSecrets(t *testing.T) {
	h := newHarness(t, withOps)
	admin := h.admin()
	b := h.browser()
	if r := b.post("/offiaccount/jssdk", "application/json", `{"url":"https://app.example.com/page"}`); r.StatusCode != 200 {
		t.Fatalf("jssdk: %d %s", r.StatusCode, r.body)
	}
	h.rpcDial()
	if st := h.push(opsCallbackToken, textPush("900100")); st != 200 {
		t.Fatalf("push: %d", st)
	}
	secrets := map[string]string{
		"access_token": h.storedValue("cred/access_token"),
		"jsapi_ticket": h.storedValue("cred/jsapi_ticket"),
		"app secret":   sandbox.DefaultAppSecret,
		"callback":     opsCallbackToken,
		"rpc key":      rpcTestKey,
		"content":      "secret words",
		"openid":       sandbox.OpenIDZhangsan,
	}
	// The server counts a connection once its handler has run, a moment
	// after the client's handshake returned.
	var page *response
	poll.Until(t, "the status page to list the RPC connection", func() bool {
		page = b.get(admin + "/")
		return bytes.Contains(page.body, []byte("<code>flask</code>"))
	})
	if page.StatusCode != 200 || !strings.HasPrefix(page.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("status page: %d %s", page.StatusCode, page.Header.Get("Content-Type"))
	}
	raw, _ := scrapeMetrics(t, admin)
	for what, secret := range secrets {
		if bytes.Contains(page.body, []byte(secret)) {
			t.Errorf("the status page shows the %s", what)
		}
		if bytes.Contains(raw, []byte(secret)) {
			t.Errorf("/metrics shows the %s", what)
		}
	}
	for _, want := range []string{`id="access_token-left" class="ok">[12]h \d+m<`, `id="jsapi_ticket-left" class="ok">[12]h \d+m<`, "<code>flask</code>", `id="health">All good`} {
		if !regexp.MustCompile(want).Match(page.body) {
			t.Errorf("the page lacks %s", want)
		}
	}
	// Nothing is loaded from elsewhere, and nothing runs.
	for _, external := range []string{"<script", "src=", "href=\"http", "@import", "url("} {
		if bytes.Contains(page.body, []byte(external)) {
			t.Errorf("the page has %q", external)
		}
	}
}
