package rpc_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/100steps/wxappliance/appliance/poll"
	"github.com/100steps/wxappliance/appliance/sandbox"
	"github.com/100steps/wxappliance/oauth"
	"github.com/100steps/wxappliance/rpc"
	"github.com/100steps/wxappliance/rpc/client"
)

func TestHandshake(t *testing.T) {
	e := newEnv(t)
	dial := func(header http.Header) (*websocket.Conn, *http.Response, error) {
		ws, resp, err := websocket.DefaultDialer.Dial(e.url, header)
		if ws != nil {
			t.Cleanup(func() { ws.Close() })
		}
		return ws, resp, err
	}
	refused := func(name string, header http.Header, status int, msg string) {
		t.Helper()
		_, resp, err := dial(header)
		if err == nil || resp == nil || resp.StatusCode != status {
			t.Fatalf("%s: err %v resp %v, want HTTP %d before the upgrade", name, err, resp, status)
		}
		defer resp.Body.Close()
		var env struct {
			Status int             `json:"status"`
			Msg    string          `json:"msg"`
			Data   json.RawMessage `json:"data"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&env); err != nil || env.Status != status ||
			!strings.Contains(env.Msg, msg) || string(env.Data) != "null" {
			t.Fatalf("%s: envelope %+v (%v)", name, env, err)
		}
	}
	bearer := func(k string) http.Header { return http.Header{"Authorization": {"Bearer " + k}} }

	refused("no key", nil, 401, "RPC密钥")
	refused("wrong key", bearer("backend-key-0123456788"), 401, "RPC密钥")
	refused("key prefix", bearer(testKey[:10]), 401, "RPC密钥")
	refused("empty bearer", bearer(""), 401, "RPC密钥")
	refused("basic scheme", http.Header{"Authorization": {"Basic " + testKey}}, 401, "RPC密钥")
	foreign := bearer(testKey)
	foreign.Set("Origin", "https://evil.example")
	refused("foreign origin", foreign, 403, "跨域")
	// Same host as the server is not enough: only listed origins.
	sameHost := bearer(testKey)
	sameHost.Set("Origin", e.hs.URL)
	refused("unlisted same-host origin", sameHost, 403, "跨域")

	for name, h := range map[string]http.Header{
		"first key":      bearer(testKey),
		"second key":     bearer(otherKey),
		"lowercase":      {"Authorization": {"bearer " + otherKey}},
		"allowed origin": {"Authorization": {"Bearer " + testKey}, "Origin": {"https://app.example.com"}},
	} {
		ws, _, err := dial(h)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		r := &rawConn{t: t, ws: ws}
		r.send(`{"jsonrpc":"2.0","id":1,"method":"token.get"}`)
		if ans := r.recv(); ans.Error != nil {
			t.Fatalf("%s: %s", name, ans.raw)
		}
	}

	// A plain GET with a good key is not a handshake.
	req, _ := http.NewRequest(http.MethodGet, e.hs.URL+"/rpc", nil)
	req.Header.Set("Authorization", "Bearer "+testKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("plain GET: %d", resp.StatusCode)
	}

	// The key's name is logged, the key never.
	poll.Until(t, "the connection log line", func() bool { return strings.Contains(e.logs.String(), "rpc_key=other") })
	if logs := e.logs.String(); strings.Contains(logs, testKey) || strings.Contains(logs, otherKey) || strings.Contains(logs, testKey[:10]) {
		t.Fatal("a key reached the log")
	}
}

func TestMalformedFramesAreAnswered(t *testing.T) {
	e := newEnv(t)
	r := e.raw()
	for _, tt := range []struct {
		name, frame string
		code        int64
		id          string
	}{
		{"not JSON", `{"jsonrpc":"2.0","id":1,"method":`, rpc.CodeParseError, "null"},
		{"batch", `[{"jsonrpc":"2.0","id":1,"method":"token.get"}]`, rpc.CodeInvalidRequest, "null"},
		{"empty batch", `[]`, rpc.CodeInvalidRequest, "null"},
		{"scalar", `42`, rpc.CodeInvalidRequest, "null"},
		{"null", `null`, rpc.CodeInvalidRequest, "null"},
		{"empty", ``, rpc.CodeParseError, "null"},
		{"request and response", `{"jsonrpc":"2.0","id":13,"method":"token.get","result":1}`, rpc.CodeInvalidRequest, "13"},
		{"no version", `{"id":7,"method":"token.get"}`, rpc.CodeInvalidRequest, "7"},
		{"old version", `{"jsonrpc":"1.0","id":"x","method":"token.get"}`, rpc.CodeInvalidRequest, `"x"`},
		{"method not a string", `{"jsonrpc":"2.0","id":8,"method":5}`, rpc.CodeInvalidRequest, "8"},
		{"no method", `{"jsonrpc":"2.0","id":9}`, rpc.CodeInvalidRequest, "9"},
		{"object id", `{"jsonrpc":"2.0","id":{},"method":"token.get"}`, rpc.CodeInvalidRequest, "null"},
		{"unknown method", `{"jsonrpc":"2.0","id":10,"method":"nope"}`, rpc.CodeMethodNotFound, "10"},
		{"scalar params", `{"jsonrpc":"2.0","id":11,"method":"token.get","params":3}`, rpc.CodeInvalidParams, "11"},
	} {
		r.send(tt.frame)
		ans := r.recv()
		if ans.Error == nil || ans.Error.Code != tt.code || string(ans.ID) != tt.id || ans.Error.Data.Status == 0 {
			t.Fatalf("%s: answered %s, want code %d id %s", tt.name, ans.raw, tt.code, tt.id)
		}
		if !strings.Contains(string(ans.raw), `"id":`+tt.id) {
			t.Fatalf("%s: id not written as %s: %s", tt.name, tt.id, ans.raw)
		}
	}
	// The connection is still good after all that.
	r.send(`{"jsonrpc":"2.0","id":12,"method":"token.get"}`)
	if ans := r.recv(); ans.Error != nil || string(ans.ID) != "12" {
		t.Fatalf("after bad frames: %s", ans.raw)
	}
}

// Ids come back exactly as sent, including the ones jsonrpc2 cannot
// represent.
func TestIDsEchoedVerbatim(t *testing.T) {
	e := newEnv(t)
	r := e.raw()
	for _, id := range []string{`0`, `-5`, `1.5`, `18446744073709551616`, `1e3`, `"abc"`, `""`, `"\u00e9"`, `null`} {
		r.send(`{"jsonrpc":"2.0","id":` + id + `,"method":"token.get","params":{}}`)
		ans := r.recv()
		if ans.Error != nil || !strings.Contains(string(ans.raw), `"id":`+id+`,`) {
			t.Fatalf("id %s answered %s", id, ans.raw)
		}
	}
	// The same id twice in flight: two answers, both with it.
	r.send(`{"jsonrpc":"2.0","id":"dup","method":"token.get"}`)
	r.send(`{"jsonrpc":"2.0","id":"dup","method":"token.get"}`)
	for range 2 {
		if ans := r.recv(); string(ans.ID) != `"dup"` || ans.Error != nil {
			t.Fatalf("duplicate id: %s", ans.raw)
		}
	}
}

func TestNotificationsAndStrayResponsesGetNoAnswer(t *testing.T) {
	e := newEnv(t)
	r := e.raw()
	r.send(`{"jsonrpc":"2.0","method":"token.get"}`)
	r.send(`{"jsonrpc":"2.0","method":"nope","params":{}}`)
	r.send(`{"jsonrpc":"2.0","id":99,"result":{}}`)
	r.send(`{"jsonrpc":"2.0","id":"x","error":{"code":1,"message":"m"}}`)
	r.send(`{"jsonrpc":"2.0","id":1,"method":"token.get"}`)
	if ans := r.recv(); string(ans.ID) != "1" {
		t.Fatalf("first answer %s; notifications and responses must not be answered", ans.raw)
	}
}

func TestConcurrentCallsOnOneConnection(t *testing.T) {
	e := newEnv(t)
	c := e.dial()
	ids := map[string]string{}
	for _, u := range []string{sandbox.OpenIDZhangsan, sandbox.OpenIDXiaoming, sandbox.OpenIDAhua, sandbox.OpenIDTom} {
		ids[e.login(u, oauth.ScopeBase)] = u
	}
	var sessions []string
	for id := range ids {
		sessions = append(sessions, id)
	}
	// A bit of WeChat latency keeps many calls in flight at once.
	e.sb.SetFault("cgi-bin/user/info", sandbox.Fault{Latency: 20 * time.Millisecond})
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			sess := sessions[i%len(sessions)]
			if i%2 == 1 {
				var info struct{ OpenID string }
				if err := c.Call(ctx, "user.get", map[string]string{"openid": ids[sess]}, &info); err != nil || info.OpenID != ids[sess] {
					errs <- errors.Join(err, errors.New("user.get got "+info.OpenID+" want "+ids[sess]))
				}
				return
			}
			var got struct{ OpenID string }
			if err := c.Call(ctx, "session.openid", map[string]string{"session": sess}, &got); err != nil || got.OpenID != ids[sess] {
				errs <- errors.Join(err, errors.New("session.openid got "+got.OpenID+" want "+ids[sess]))
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// Over MaxInFlight+MaxQueued, requests are answered CodeBusy at once and
// the others still complete.
func TestBusyConnection(t *testing.T) {
	e := newEnv(t, func(c *envConfig) {
		c.opts.MaxInFlight = 1
		c.opts.MaxQueued = 1
	})
	e.sb.SetFault("cgi-bin/user/info", sandbox.Fault{Latency: time.Second})
	r := e.raw()
	for i := range 5 {
		r.send(`{"jsonrpc":"2.0","id":` + string(rune('1'+i)) + `,"method":"user.get","params":{"openid":"` + sandbox.OpenIDZhangsan + `"}}`)
	}
	busy, done := 0, 0
	for range 5 {
		ans := r.recv()
		switch {
		case ans.Error != nil && ans.Error.Code == rpc.CodeBusy && ans.Error.Data.Status == 503:
			busy++
		case ans.Error == nil:
			done++
		default:
			t.Fatalf("unexpected answer %s", ans.raw)
		}
	}
	if busy != 3 || done != 2 {
		t.Fatalf("%d busy, %d done; want 3 and 2 (one running, one queued)", busy, done)
	}
}

// panicky is the App with a Token that panics, to check that a bug in a
// method is one error answer, not a dead process or connection.
type panicky struct{ rpc.App }

func (panicky) Token(context.Context) (oauth.Token, error) { panic("boom: secret detail") }

func TestPanicInMethodIsAnInternalError(t *testing.T) {
	e := newEnv(t, func(c *envConfig) {
		c.svc = func(s rpc.Services) rpc.Services { s.App = panicky{s.App}; return s }
	})
	c := e.dial()
	got := callErr(t, c, "token.get", nil, rpc.CodeInternalError, 500)
	if got.Data.Msg != "服务器错误" || strings.Contains(got.Message+got.Data.Msg, "boom") {
		t.Fatalf("panic answered %+v", got)
	}
	if !strings.Contains(e.logs.String(), "boom: secret detail") {
		t.Fatal("the panic was not logged")
	}
	// The connection and the server carry on.
	var info struct{ OpenID string }
	call(t, c, "user.get", map[string]string{"openid": sandbox.OpenIDTom}, &info)
}

// http.Server's WriteTimeout and ReadTimeout must not cut a long-lived
// connection, and pings keep an idle one alive.
func TestConnectionOutlivesServerTimeouts(t *testing.T) {
	e := newEnv(t, func(c *envConfig) {
		c.opts.PingInterval = 100 * time.Millisecond
		c.server = func(s *http.Server) {
			s.WriteTimeout = 200 * time.Millisecond
			s.ReadTimeout = 200 * time.Millisecond
		}
	})
	c := e.dial(func(o *client.Options) { o.PingInterval = time.Hour })
	mustToken(t, c)
	time.Sleep(time.Second) // five write timeouts, ten pings
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Call(ctx, "token.get", nil, &tok); err != nil || tok.AccessToken == "" {
		t.Fatalf("after idling past the server's timeouts: %v", err)
	}
	if strings.Count(e.logs.String(), "rpc connected") != 1 {
		t.Fatalf("the connection was replaced:\n%s", e.logs.String())
	}
}

// A peer that stops answering pings is dropped after two intervals.
func TestDeadPeerIsDropped(t *testing.T) {
	e := newEnv(t, func(c *envConfig) { c.opts.PingInterval = 50 * time.Millisecond })
	e.raw() // never reads, so never answers a ping
	poll.Until(t, "the silent connection to be closed", func() bool {
		return strings.Contains(e.logs.String(), "rpc disconnected")
	})
}

// A message over the read limit ends the connection with 1009; the client
// reconnects and carries on.
func TestReadLimitAndReconnect(t *testing.T) {
	e := newEnv(t, func(c *envConfig) { c.opts.ReadLimit = 4 << 10 })
	c := e.dial(func(o *client.Options) { o.MinBackoff = 10 * time.Millisecond })
	err := c.Call(context.Background(), "session.openid", map[string]string{"session": strings.Repeat("x", 8<<10)}, nil)
	if !errors.Is(err, client.ErrDisconnected) {
		t.Fatalf("oversized call: %v, want ErrDisconnected", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := c.Call(ctx, "token.get", nil, &tok); err != nil || tok.AccessToken == "" {
		t.Fatalf("after reconnecting: %v", err)
	}
	// The oversized message may be cut short in writing, and a request not
	// wholly sent is sent again on the next connection (which it ends too):
	// two connections at least.
	if n := strings.Count(e.logs.String(), "rpc connected"); n < 2 {
		t.Fatalf("%d connections, want a reconnection", n)
	}
}

func TestShutdownDrainsThenCloses(t *testing.T) {
	e := newEnv(t)
	e.sb.SetFault("cgi-bin/user/info", sandbox.Fault{Latency: 300 * time.Millisecond})
	r := e.raw()
	r.send(`{"jsonrpc":"2.0","id":1,"method":"user.get","params":{"openid":"` + sandbox.OpenIDZhangsan + `"}}`)
	poll.Until(t, "the request to start", func() bool { return e.sb.Count("cgi-bin/user/info") == 1 })

	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		shut <- e.srv.Shutdown(ctx)
	}()
	// The request in flight is answered, then the server says goodbye.
	if ans := r.recv(); ans.Error != nil || string(ans.ID) != "1" {
		t.Fatalf("in-flight request: %s", ans.raw)
	}
	r.ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _, err := r.ws.ReadMessage()
	if !websocket.IsCloseError(err, websocket.CloseGoingAway) {
		t.Fatalf("after shutdown: %v, want close 1001", err)
	}
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
	// New connections are refused.
	_, resp, err := websocket.DefaultDialer.Dial(e.url, http.Header{"Authorization": {"Bearer " + testKey}})
	if err == nil || resp == nil || resp.StatusCode != 503 {
		t.Fatalf("handshake after shutdown: %v %v", err, resp)
	}
}

func TestCloseCancelsRequestsInFlight(t *testing.T) {
	// The request's own deadline is far: Close must cut it, not wait.
	e := newEnv(t, func(c *envConfig) { c.opts.CallTimeout = 2 * time.Minute })
	e.sb.SetFault("cgi-bin/user/info", sandbox.Fault{Hang: true})
	c := e.dial(func(o *client.Options) { o.MaxBackoff = 50 * time.Millisecond })
	done := make(chan error, 1)
	go func() {
		done <- c.Call(context.Background(), "user.get", map[string]string{"openid": sandbox.OpenIDZhangsan}, nil)
	}()
	poll.Until(t, "the request to start", func() bool { return e.sb.Count("cgi-bin/user/info") == 1 })
	start := time.Now()
	if err := e.srv.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > time.Minute {
		t.Fatalf("Close took %v with a hung request: it waited for the request's deadline", d)
	}
	if err := <-done; !errors.Is(err, client.ErrDisconnected) {
		t.Fatalf("call cut by Close: %v", err)
	}
}

func TestClientDialRefusedAndClosed(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	_, err := client.Dial(ctx, e.url, "not-the-key-0123456789", nil)
	var he *client.HandshakeError
	if !errors.As(err, &he) || he.StatusCode != 401 || !strings.Contains(he.Msg, "RPC密钥") {
		t.Fatalf("wrong key: %v", err)
	}
	_, err = client.Dial(ctx, e.url, testKey, &client.Options{Header: http.Header{"Origin": {"https://evil.example"}}})
	if !errors.As(err, &he) || he.StatusCode != 403 {
		t.Fatalf("foreign origin: %v", err)
	}
	c := e.dial()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Call(ctx, "token.get", nil, nil); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("call after Close: %v", err)
	}
}
