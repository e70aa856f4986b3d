package metrics_test

import (
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/100steps/wxappliance/appliance/metrics"
	"github.com/100steps/wxappliance/appliance/metrics/metricstest"
	"github.com/100steps/wxappliance/callback"
	"github.com/100steps/wxappliance/oauth"
)

func scrape(t *testing.T, m *metrics.Metrics) metricstest.Families {
	t.Helper()
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	return metricstest.Scrape(t, srv.URL)
}

func want(t *testing.T, f metricstest.Families, name string, labels map[string]string, value float64) {
	t.Helper()
	got, ok := f.Value(name, labels)
	if !ok {
		t.Fatalf("no series %s%v; have %v", name, labels, f.Labels(name))
	}
	if got != value {
		t.Fatalf("%s%v = %v, want %v", name, labels, got, value)
	}
}

// The registry is the appliance's own and carries the Go and process
// collectors beside the appliance's series.
func TestRegistry(t *testing.T) {
	f := scrape(t, metrics.New("v1.2.3"))
	for _, name := range []string{"go_goroutines", "process_start_time_seconds", "wxappliance_rpc_connections", "wxappliance_callback_deadline_fallbacks_total"} {
		if _, ok := f[name]; !ok {
			t.Errorf("no %s", name)
		}
	}
	want(t, f, "wxappliance_build_info", map[string]string{"version": "v1.2.3"}, 1)
}

// Label values stay bounded whatever the clients send.
func TestLabelsAreBounded(t *testing.T) {
	m := metrics.New("test")
	for i := range metrics.MaxAPIs + 10 {
		m.WeChatCall(fmt.Sprintf("cgi-bin/user/x%d", i), "0", time.Millisecond)
	}
	m.WeChatCall("cgi-bin/user/x0", "40001", time.Millisecond) // seen early: keeps its label
	m.CallbackMessage(callback.Observation{MsgType: "text", Mode: "safe", Outcome: callback.OutcomeReplied})
	m.CallbackMessage(callback.Observation{MsgType: "hologram", Mode: "safe", Outcome: callback.OutcomeEmpty})
	m.CallbackMessage(callback.Observation{Outcome: callback.OutcomeRefused})
	m.CallbackMessage(callback.Observation{MsgType: "event", Event: "subscribe", Mode: "compatible", Outcome: callback.OutcomeLate})

	f := scrape(t, m)
	if n := len(f.Labels("wxappliance_wechat_calls_total")); n != metrics.MaxAPIs+2 {
		t.Fatalf("%d wechat_calls_total series, want %d apis, other, and x0's 40001", n, metrics.MaxAPIs)
	}
	want(t, f, "wxappliance_wechat_calls_total", map[string]string{"api": "other", "errcode": "0"}, 10)
	want(t, f, "wxappliance_wechat_calls_total", map[string]string{"api": "cgi-bin/user/x0", "errcode": "40001"}, 1)
	want(t, f, "wxappliance_wechat_call_duration_seconds", map[string]string{"api": "other"}, 10)
	want(t, f, "wxappliance_callback_messages_total", map[string]string{"type": "text", "mode": "safe", "outcome": "replied"}, 1)
	want(t, f, "wxappliance_callback_messages_total", map[string]string{"type": "other", "mode": "safe", "outcome": "empty"}, 1)
	want(t, f, "wxappliance_callback_messages_total", map[string]string{"type": "none", "mode": "none", "outcome": "refused"}, 1)
	want(t, f, "wxappliance_callback_messages_total", map[string]string{"type": "event", "mode": "compatible", "outcome": "late"}, 1)
	want(t, f, "wxappliance_callback_deadline_fallbacks_total", nil, 1)
}

func TestCredentials(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	m := metrics.New("test")
	held := oauth.Token{Value: "secret-value", ExpiresAt: now.Add(90 * time.Minute)}
	m.WatchCredential("access_token", func() (oauth.Token, bool) { return held, true }, func() time.Time { return now })
	m.WatchCredential("jsapi_ticket", func() (oauth.Token, bool) { return oauth.Token{}, false }, func() time.Time { return now })
	m.CredentialFetched(oauth.Fetched{Credential: "access_token", At: now, ExpiresAt: held.ExpiresAt})
	m.CredentialFetched(oauth.Fetched{Credential: "jsapi_ticket", At: now, Err: fmt.Errorf("fetch: %w", &oauth.APIError{Code: 40164, Msg: "invalid ip"})})
	m.CredentialFetched(oauth.Fetched{Credential: "jsapi_ticket", At: now, Err: oauth.ErrTimeout})

	f := scrape(t, m)
	if f.Type("wxappliance_credential_expiry_seconds") != "GAUGE" {
		t.Fatalf("expiry is a %s", f.Type("wxappliance_credential_expiry_seconds"))
	}
	want(t, f, "wxappliance_credential_expiry_seconds", map[string]string{"credential": "access_token"}, 5400)
	want(t, f, "wxappliance_credential_expiry_seconds", map[string]string{"credential": "jsapi_ticket"}, 0)
	want(t, f, "wxappliance_credential_refreshes_total", map[string]string{"credential": "access_token", "result": "ok"}, 1)
	want(t, f, "wxappliance_credential_refreshes_total", map[string]string{"credential": "jsapi_ticket", "result": "40164"}, 1)
	want(t, f, "wxappliance_credential_refreshes_total", map[string]string{"credential": "jsapi_ticket", "result": "timeout"}, 1)
}

func TestRPCAndHTTP(t *testing.T) {
	m := metrics.New("test")
	m.RPCConn("flask", true)
	m.RPCConn("flask", true)
	m.RPCConn("flask", false)
	m.RPCCall("token.get", 0, time.Millisecond)
	m.RPCCall("unknown", -32601, time.Millisecond)
	m.HTTPRequest("GET /healthz", 200, time.Millisecond)
	m.HTTPRequest("GET /healthz", 200, time.Millisecond)
	m.HTTPRequest("unmatched", 404, time.Millisecond)
	m.StorageError("put")

	f := scrape(t, m)
	want(t, f, "wxappliance_rpc_connections", nil, 1)
	want(t, f, "wxappliance_rpc_calls_total", map[string]string{"method": "token.get", "code": "0"}, 1)
	want(t, f, "wxappliance_rpc_calls_total", map[string]string{"method": "unknown", "code": "-32601"}, 1)
	want(t, f, "wxappliance_http_requests_total", map[string]string{"route": "GET /healthz", "status": "200"}, 2)
	want(t, f, "wxappliance_http_requests_total", map[string]string{"route": "unmatched", "status": "404"}, 1)
	want(t, f, "wxappliance_http_request_duration_seconds", map[string]string{"route": "GET /healthz"}, 2)
	want(t, f, "wxappliance_storage_errors_total", map[string]string{"op": "put"}, 1)
}

type sizedStore struct{ lsm, vlog int64 }

func (s sizedStore) Size() (int64, int64) { return s.lsm, s.vlog }

// A store that says its size gets the size gauge; one that does not gets
// none. The free space of storage.dir is there on Linux.
func TestStorage(t *testing.T) {
	dir := t.TempDir()
	m := metrics.New("test")
	m.WatchStorage(sizedStore{lsm: 3 << 20, vlog: 64 << 20}, dir)
	f := scrape(t, m)
	want(t, f, "wxappliance_storage_size_bytes", map[string]string{"part": "lsm"}, 3<<20)
	want(t, f, "wxappliance_storage_size_bytes", map[string]string{"part": "vlog"}, 64<<20)
	if free, _, err := metrics.DiskSpace(dir); err == nil {
		got, ok := f.Value("wxappliance_storage_free_bytes", nil)
		// Other processes write meanwhile: same order of magnitude.
		if !ok || got <= 0 || got > 2*float64(free)+1<<30 {
			t.Fatalf("free bytes %v (%v), statfs says %d", got, ok, free)
		}
	}

	m = metrics.New("test")
	m.WatchStorage(struct{}{}, "")
	f = scrape(t, m)
	if _, ok := f["wxappliance_storage_size_bytes"]; ok {
		t.Fatal("a store without Size has a size series")
	}
	if _, ok := f["wxappliance_storage_free_bytes"]; ok {
		t.Fatal("no directory, yet a free-space series")
	}
}

func TestDirSizer(t *testing.T) {
	dir := t.TempDir()
	for name, size := range map[string]int{"000001.sst": 1000, "000002.sst": 24, "000001.vlog": 4096, "MANIFEST": 77, "KEYREGISTRY": 5} {
		if err := os.WriteFile(filepath.Join(dir, name), make([]byte, size), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	lsm, vlog := metrics.DirSizer(dir).Size()
	if lsm != 1024 || vlog != 4096 {
		t.Fatalf("Size = %d, %d; want 1024, 4096", lsm, vlog)
	}
}

// The per-request cost on the public listener, once a route's series exist.
func BenchmarkHTTPRequest(b *testing.B) {
	m := metrics.New("bench")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.HTTPRequest("GET /auth/user/openid", 200, 3*time.Millisecond)
		}
	})
}

func BenchmarkWeChatCall(b *testing.B) {
	m := metrics.New("bench")
	b.ReportAllocs()
	for b.Loop() {
		m.WeChatCall("cgi-bin/user/info", "0", 40*time.Millisecond)
	}
}
