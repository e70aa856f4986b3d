package rpc_test

import (
	"crypto/rand"
	"encoding/json"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// FuzzFrames sends any frame a backend could send over a real WebSocket to
// a real server (sandbox behind it), then a probe request. Whatever the
// frame, the connection must stay open and every frame the server writes
// must be a well-formed JSON-RPC 2.0 response: exactly one of result and
// error, an id, error codes in the documented set.
func FuzzFrames(f *testing.F) {
	for _, s := range []string{
		``, `{`, `[]`, `[{"jsonrpc":"2.0","id":1,"method":"token.get"}]`, `null`, `"x"`, `42`,
		`{"jsonrpc":"2.0","id":1,"method":"token.get"}`,
		`{"jsonrpc":"2.0","id":-1.5e300,"method":"session.openid","params":{"session":"AAAAAAAAAAAAAAAAAAAAAAAAAA"}}`,
		`{"jsonrpc":"2.0","id":"s","method":"session.user","params":{"session":""}}`,
		`{"jsonrpc":"2.0","id":null,"method":"ticket.redeem","params":{"ticket":7}}`,
		`{"jsonrpc":"2.0","id":2,"method":"user.get","params":{"openid":"oSBX_zhangsan","extra":1}}`,
		`{"jsonrpc":"2.0","id":3,"method":"media.get","params":{"media_id":"sandbox-voice"}}`,
		`{"jsonrpc":"2.0","id":4,"method":"jssdk.config","params":{"url":"https://app.example.com/#x"}}`,
		`{"jsonrpc":"2.0","id":5,"method":"token.invalidate","params":{"access_token":""}}`,
		`{"jsonrpc":"2.0","id":6,"method":"wechat.call","params":{"method":"GET","path":"cgi-bin/menu/get","query":{"a":"b"}}}`,
		`{"jsonrpc":"2.0","id":7,"method":"wechat.call","params":{"method":"POST","path":"../cgi-bin/token","body":{}}}`,
		`{"jsonrpc":"2.0","id":8,"method":"callback.subscribe","params":{"msg_types":["text"],"events":[1]}}`,
		`{"jsonrpc":"2.0","id":9,"result":{"reply":null}}`,
		`{"jsonrpc":"2.0","id":{"a":1},"method":"x"}`,
		`{"jsonrpc":"1.0","id":1,"method":"token.get"}`,
		`{"jsonrpc":"2.0","method":"token.get"}`,
	} {
		f.Add(s)
	}
	e := newEnv(f)
	ws, _, err := websocket.DefaultDialer.Dial(e.url, map[string][]string{"Authorization": {"Bearer " + testKey}})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { ws.Close() })

	f.Fuzz(func(t *testing.T, frame string) {
		if err := ws.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
			t.Fatalf("connection closed after an earlier frame: %v", err)
		}
		probe := rand.Text()
		if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"jsonrpc":"2.0","id":"`+probe+`","method":"no.such.method"}`)); err != nil {
			t.Fatalf("connection closed by frame %q: %v", frame, err)
		}
		for {
			ws.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, data, err := ws.ReadMessage()
			if err != nil {
				t.Fatalf("after frame %q: %v", frame, err)
			}
			var w wire
			if err := json.Unmarshal(data, &w); err != nil {
				t.Fatalf("server wrote non-JSON %q", data)
			}
			if w.Method == "callback.message" {
				continue // a server-to-client request; none is expected here
			}
			if w.JSONRPC != "2.0" || w.ID == nil || (w.Result == nil) == (w.Error == nil) {
				t.Fatalf("malformed response %s to frame %q", data, frame)
			}
			if w.Error != nil && !knownCode(w.Error.Code) {
				t.Fatalf("undocumented error code in %s", data)
			}
			if w.Error != nil && (w.Error.Data.Status == 0 || w.Error.Data.Msg == "") {
				t.Fatalf("error without data {status,msg}: %s", data)
			}
			if string(w.ID) == `"`+probe+`"` {
				if w.Error == nil || w.Error.Code != -32601 {
					t.Fatalf("probe answered %s", data)
				}
				return
			}
		}
	})
}

func knownCode(c int64) bool {
	switch c {
	case -32700, -32600, -32601, -32602, -32603, -32000, -32001, -32003, -32004, -32005, -32010, -32013:
		return true
	}
	return false
}
