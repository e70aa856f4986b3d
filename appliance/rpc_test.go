package appliance_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/100steps/wxappliance/appliance"
	"github.com/100steps/wxappliance/appliance/logtest"
	"github.com/100steps/wxappliance/appliance/sandbox"
	"github.com/100steps/wxappliance/rpc"
	"github.com/100steps/wxappliance/rpc/client"
)

const rpcTestKey = "appliance-test-key-0123"

func withRPC(cfg *appliance.Config) {
	cfg.RPC.Keys = []appliance.RPCKey{{Name: "flask", Key: rpcTestKey}}
}

// rpcDial connects the Go client to the harness's appliance.
func (h *harness) rpcDial() *client.Client {
	h.t.Helper()
	url := "ws" + strings.TrimPrefix(h.srv.URL, "http") + h.cfg.RPC.Path
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, url, rpcTestKey, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	// Before the harness's server closes: httptest waits for handlers,
	// and an RPC connection's handler lasts as long as the connection.
	h.t.Cleanup(func() { c.Close() })
	return c
}

func rpcCall(t *testing.T, c *client.Client, method string, params, result any) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return c.Call(ctx, method, params, result)
}

func TestRPCOffWithoutKeys(t *testing.T) {
	h := newHarness(t)
	if h.app.RPC() != nil {
		t.Fatal("RPC is on without keys")
	}
	if st, _ := h.browser().get("/rpc").envelope(t); st != 404 {
		t.Fatalf("/rpc without keys: %d", st)
	}
}

// A backend on the same site gets the user from the session cookie's
// value, without forwarding cookies: the same answers as the browser's.
func TestRPCSessionFromCookie(t *testing.T) {
	h := newHarness(t, withRPC)
	b := h.browser()
	b.mustLogin(sandbox.OpenIDXiaoming)
	session := b.sessionCookie().Value
	c := h.rpcDial()

	var got struct{ OpenID string }
	if err := rpcCall(t, c, "session.openid", map[string]string{"session": session}, &got); err != nil || got.OpenID != sandbox.OpenIDXiaoming {
		t.Fatalf("session.openid: %v %q", err, got.OpenID)
	}
	var viaRPC, viaHTTP json.RawMessage
	if err := rpcCall(t, c, "session.user", map[string]string{"session": session}, &viaRPC); err != nil {
		t.Fatal(err)
	}
	viaHTTP = b.get("/auth/user").body
	if !bytes.Equal(bytes.TrimSpace(viaRPC), bytes.TrimSpace(viaHTTP)) {
		t.Fatalf("session.user %s\n/auth/user   %s", viaRPC, viaHTTP)
	}
	if err := rpcCall(t, c, "user.get", map[string]string{"openid": sandbox.OpenIDXiaoming}, &viaRPC); err != nil {
		t.Fatal(err)
	}
	viaHTTP = b.get("/offiaccount/user").body
	if !bytes.Equal(bytes.TrimSpace(viaRPC), bytes.TrimSpace(viaHTTP)) {
		t.Fatalf("user.get %s\n/offiaccount/user %s", viaRPC, viaHTTP)
	}
}

// A backend on another domain learns the user from the one-time ticket
// /auth?ticket=1 appends to the return URL.
func TestRPCTicketLogin(t *testing.T) {
	h := newHarness(t, withRPC)
	b := h.browser()
	resp := b.login(sandbox.OpenIDZhangsan, "ticket", "1", "scope", "snsapi_base")
	ticket := locationParam(t, resp, "wx_ticket")
	if ticket == "" {
		t.Fatalf("no wx_ticket in %q", resp.Header.Get("Location"))
	}
	c := h.rpcDial()
	var login struct{ OpenID, Scope string }
	if err := rpcCall(t, c, "ticket.redeem", map[string]string{"ticket": ticket}, &login); err != nil ||
		login.OpenID != sandbox.OpenIDZhangsan || login.Scope != "snsapi_base" {
		t.Fatalf("ticket.redeem: %v %+v", err, login)
	}
	err := rpcCall(t, c, "ticket.redeem", map[string]string{"ticket": ticket}, nil)
	if client.CodeOf(err) != rpc.CodeNotLoggedIn {
		t.Fatalf("second redeem: %v", err)
	}
}

// Each error carries the status and msg the HTTP envelope has for the same
// situation.
func TestRPCErrorsMatchEnvelope(t *testing.T) {
	h := newHarness(t, withRPC)
	c := h.rpcDial()
	lisi := h.browser()
	lisi.mustLogin(sandbox.OpenIDLisi)
	anon := h.browser()

	check := func(name string, httpResp *response, method string, params any, code int64) {
		t.Helper()
		status, msg := httpResp.envelope(t)
		err := rpcCall(t, c, method, params, nil)
		var e *client.Error
		if !errors.As(err, &e) || e.Code != code || e.Data.Status != status || e.Data.Msg != msg {
			t.Fatalf("%s: rpc %v; HTTP %d %q", name, err, status, msg)
		}
	}
	check("not logged in", anon.get("/auth/user/openid"),
		"session.openid", map[string]string{"session": "AAAAAAAAAAAAAAAAAAAAAAAAAA"}, rpc.CodeNotLoggedIn)
	check("not subscribed", lisi.get("/offiaccount/user"),
		"user.get", map[string]string{"openid": sandbox.OpenIDLisi}, rpc.CodeNotSubscribed)
	check("bad media id", anon.get("/offiaccount/media?media_id=nope"),
		"media.get", map[string]string{"media_id": "nope"}, rpc.CodeBadInput)
	check("foreign page", anon.post("/offiaccount/jssdk", "", `{"url":"https://evil.example/"}`),
		"jssdk.config", map[string]string{"url": "https://evil.example/"}, rpc.CodeBadInput)
	h.sb.SetFault("cgi-bin/user/info", sandbox.Fault{Hang: true, Times: 2})
	check("timeout", lisi.get("/offiaccount/user"),
		"user.get", map[string]string{"openid": sandbox.OpenIDLisi}, rpc.CodeTimeout)
}

func TestRPCHandshakeThroughAppliance(t *testing.T) {
	h := newHarness(t, withRPC)
	url := "ws" + strings.TrimPrefix(h.srv.URL, "http") + "/rpc"
	for _, tt := range []struct {
		name   string
		header http.Header
		status int
	}{
		{"no key", http.Header{}, 401},
		{"wrong key", http.Header{"Authorization": {"Bearer " + rpcTestKey + "x"}}, 401},
		{"foreign origin", http.Header{"Authorization": {"Bearer " + rpcTestKey}, "Origin": {"https://evil.example"}}, 403},
	} {
		ws, resp, err := websocket.DefaultDialer.Dial(url, tt.header)
		if ws != nil {
			ws.Close()
		}
		if err == nil || resp == nil || resp.StatusCode != tt.status {
			t.Fatalf("%s: %v %v, want %d", tt.name, err, resp, tt.status)
		}
	}
	// An allowed origin (cors.allowed_origins) with the key gets through
	// the appliance's middleware to a working connection.
	ws, _, err := websocket.DefaultDialer.Dial(url, http.Header{
		"Authorization": {"Bearer " + rpcTestKey}, "Origin": {"https://app.example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	ws.WriteMessage(websocket.TextMessage, []byte(`{"jsonrpc":"2.0","id":"a","method":"token.get"}`))
	_, data, err := ws.ReadMessage()
	if err != nil || !strings.Contains(string(data), `"access_token"`) || !strings.Contains(string(data), `"id":"a"`) {
		t.Fatalf("token.get: %v %s", err, data)
	}
	if strings.Contains(h.logs.String(), rpcTestKey) {
		t.Fatal("the key reached the log")
	}
}

// The real server: an RPC connection outlives server.write_timeout and
// read_timeout, and a shutdown closes it with 1001 (going away) before the
// store closes.
func TestRPCUnderServe(t *testing.T) {
	cfg := sandboxConfig(t)
	cfg.Server.WriteTimeout = appliance.Duration(300 * time.Millisecond)
	cfg.Server.ReadTimeout = appliance.Duration(300 * time.Millisecond)
	cfg.Server.ShutdownTimeout = appliance.Duration(5 * time.Second)
	withRPC(&cfg)
	logs := &logtest.Buffer{}
	srv := serve(t, cfg, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	url := "ws://" + srv.addr + "/rpc"

	ws, _, err := websocket.DefaultDialer.Dial(url, http.Header{"Authorization": {"Bearer " + rpcTestKey}})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	ask := func(id string) {
		t.Helper()
		if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"jsonrpc":"2.0","id":"`+id+`","method":"token.get"}`)); err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, data, err := ws.ReadMessage()
		if err != nil || !strings.Contains(string(data), `"access_token"`) {
			t.Fatalf("%s: %v %s", id, err, data)
		}
	}
	ask("first")
	time.Sleep(time.Second) // over three write and read timeouts
	ask("after idling")

	srv.stop()
	ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := ws.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseGoingAway) {
		t.Fatalf("on shutdown: %v, want close 1001", err)
	}
	if err := srv.wait(); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if !strings.Contains(logs.String(), "stopped") {
		t.Fatalf("no clean stop:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), rpcTestKey) {
		t.Fatal("the key reached the log")
	}
}
