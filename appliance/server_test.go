package appliance_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"wxappliance/appliance"
	"wxappliance/appliance/sandbox"
	"wxappliance/kv"
)

func TestReadyz(t *testing.T) {
	h := newHarness(t)
	b := h.browser()
	ready := b.get("/readyz")
	if ready.StatusCode != 200 || ready.json(t)["ready"] != true {
		t.Fatalf("readyz %d %s", ready.StatusCode, ready.body)
	}
	if b.get("/healthz").StatusCode != 200 {
		t.Fatal("healthz")
	}

	// No token to be had: WeChat refuses the server's IP.
	h2 := newHarness(t)
	h2.sb.SetFault("cgi-bin/stable_token", sandbox.Fault{Errcode: 40164})
	resp := h2.browser().get("/readyz")
	var body struct {
		Ready  bool              `json:"ready"`
		Checks map[string]string `json:"checks"`
	}
	if err := json.Unmarshal(resp.body, &body); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 503 || body.Ready || body.Checks["store"] != "ok" || !strings.Contains(body.Checks["access_token"], "40164") {
		t.Fatalf("readyz without token: %d %s", resp.StatusCode, resp.body)
	}
	if h2.browser().get("/healthz").StatusCode != 200 {
		t.Fatal("healthz must answer while the process is up")
	}

	// A closed store is reported.
	h.store.Close()
	if resp := b.get("/readyz"); resp.StatusCode != 503 || !strings.Contains(string(resp.body), "closed") {
		t.Fatalf("readyz with a closed store: %d %s", resp.StatusCode, resp.body)
	}
}

// Shutdown stops accepting, lets in-flight requests finish, and releases
// the data directory.
func TestGracefulShutdown(t *testing.T) {
	cfg := appliance.DefaultConfig()
	cfg.Server.Listen = "127.0.0.1:0"
	cfg.Storage.Dir = t.TempDir()
	cfg.WeChat.Sandbox = true
	cfg.WeChat.AppID = appliance.SandboxAppID
	cfg.WeChat.AppSecret = appliance.SandboxAppSecret
	cfg.OAuth.AllowedReturnHosts = []string{"127.0.0.1"}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addrc := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- appliance.Serve(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), func(a string) { addrc <- a })
	}()
	base := "http://" + <-addrc

	// The next media download takes 700ms upstream.
	fault := `{"endpoint":"cgi-bin/media/get","latency_ms":700,"times":1}`
	if resp, err := http.Post(base+"/sandbox/_control/fault", "application/json", strings.NewReader(fault)); err != nil || resp.StatusCode != 200 {
		t.Fatalf("setting the fault: %v %v", err, resp)
	}
	inflight := make(chan *http.Response, 1)
	go func() {
		resp, err := http.Get(base + "/offiaccount/media?media_id=" + sandbox.MediaImage)
		if err != nil {
			t.Error(err)
		}
		inflight <- resp
	}()
	time.Sleep(200 * time.Millisecond)
	cancel()

	resp := <-inflight
	if resp == nil || resp.StatusCode != 200 {
		t.Fatalf("in-flight request was not drained: %v", resp)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `"media_data"`) {
		t.Fatalf("in-flight answer %s", body)
	}
	if err := <-done; err != nil {
		t.Fatalf("serve returned %v", err)
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Fatal("still accepting after shutdown")
	}
	// The store was closed: the directory can be opened again.
	store, err := kv.OpenBadger(cfg.Storage.Dir, kv.BadgerOptions{})
	if err != nil {
		t.Fatalf("data dir still held after shutdown: %v", err)
	}
	store.Close()
}

func TestSecondProcessOnSameDataDir(t *testing.T) {
	dir := t.TempDir()
	first, err := kv.OpenBadger(dir, kv.BadgerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	cfg := appliance.DefaultConfig()
	cfg.Storage.Dir = dir
	cfg.WeChat.Sandbox = true
	cfg.WeChat.AppID = appliance.SandboxAppID
	cfg.WeChat.AppSecret = appliance.SandboxAppSecret
	cfg.OAuth.AllowedReturnHosts = []string{"127.0.0.1"}
	_, err = appliance.New(cfg, appliance.Options{})
	if err == nil || !strings.Contains(err.Error(), "in use by another process") || !strings.Contains(err.Error(), dir) {
		t.Fatalf("err = %v, want a clear message naming the directory", err)
	}
}
