package appliance_test

import (
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/100steps/wxappliance/appliance"
	"github.com/100steps/wxappliance/appliance/poll"
	"github.com/100steps/wxappliance/appliance/sandbox"
	"github.com/100steps/wxappliance/kv"
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
	cfg := sandboxConfig(t)
	srv := serve(t, cfg, nil)
	base := "http://" + srv.addr

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
	// Stop once the download is under way upstream (it takes 700ms there).
	poll.Until(t, "the media download to reach the sandbox", func() bool {
		n, err := sandbox.Counts(base + "/sandbox")
		return err == nil && n["cgi-bin/media/get"] == 1
	})
	srv.stop()

	resp := <-inflight
	if resp == nil || resp.StatusCode != 200 {
		t.Fatalf("in-flight request was not drained: %v", resp)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `"media_data"`) {
		t.Fatalf("in-flight answer %s", body)
	}
	if err := srv.wait(); err != nil {
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
	cfg.WeChat.AppID = sandbox.DefaultAppID
	cfg.WeChat.AppSecret = sandbox.DefaultAppSecret
	cfg.OAuth.AllowedReturnHosts = []string{"127.0.0.1"}
	_, err = appliance.New(cfg, appliance.Options{})
	if err == nil || !strings.Contains(err.Error(), "in use by another process") || !strings.Contains(err.Error(), dir) {
		t.Fatalf("err = %v, want a clear message naming the directory", err)
	}
}

// A client trickling its headers (slowloris) is cut off after
// server.read_header_timeout instead of holding a connection forever.
func TestSlowHeadersCutOff(t *testing.T) {
	cfg := sandboxConfig(t)
	cfg.Server.ReadHeaderTimeout = appliance.Duration(300 * time.Millisecond)
	addr := serve(t, cfg, nil).addr

	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	header := "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + strings.Repeat("a", 40) + "\r\n\r\n"
	start := time.Now()
	sent := 0
	for ; sent < len(header); sent++ {
		if _, err := conn.Write([]byte{header[sent]}); err != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
		conn.SetReadDeadline(time.Now().Add(time.Millisecond))
		if _, err := conn.Read(make([]byte, 1)); err != nil && !isTimeout(err) {
			break // closed by the server
		}
	}
	if sent >= len(header) {
		t.Fatalf("the server waited %v for the whole trickled header", time.Since(start))
	}
	// The cut came after the timeout, not before: a slow but legal client
	// gets its due.
	if elapsed := time.Since(start); elapsed < 300*time.Millisecond {
		t.Fatalf("cut off after %v, before read_header_timeout", elapsed)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
