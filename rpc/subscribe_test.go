package rpc_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/100steps/wxappliance/appliance/poll"
	"github.com/100steps/wxappliance/rpc"
	"github.com/100steps/wxappliance/rpc/client"
)

// pushed is the part of a callback message these tests look at.
type pushed struct {
	MsgType string `json:"msg_type"`
	Event   string `json:"event"`
	Content string `json:"content"`
	From    string `json:"from_user_name"`
}

func textMsg(content string) map[string]any {
	return map[string]any{"msg_type": "text", "content": content, "from_user_name": "oSBX_zhangsan", "create_time": 1700000000, "msg_id": "1234567890123456789"}
}

func eventMsg(event string) map[string]any {
	return map[string]any{"msg_type": "event", "event": event, "from_user_name": "oSBX_zhangsan", "create_time": 1700000000}
}

func deliver(t *testing.T, e *env, timeout time.Duration, msg map[string]any) (json.RawMessage, bool, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	event, _ := msg["event"].(string)
	return e.srv.DeliverForTest(ctx, msg["msg_type"].(string), event, msg)
}

func subscribe(t *testing.T, c *client.Client, f client.Filter, h client.Handler) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Subscribe(ctx, f, h); err != nil {
		t.Fatal(err)
	}
}

func TestSubscriberAnswers(t *testing.T) {
	e := newEnv(t)
	if _, ok, err := deliver(t, e, time.Second, textMsg("hi")); ok || err != nil {
		t.Fatalf("no subscriber: ok %v err %v, want the rules to answer", ok, err)
	}
	c := e.dial()
	var seen atomic.Value
	subscribe(t, c, client.Filter{}, func(ctx context.Context, msg json.RawMessage) (any, error) {
		var m pushed
		if err := json.Unmarshal(msg, &m); err != nil {
			return nil, err
		}
		seen.Store(string(msg))
		return map[string]string{"type": "text", "content": "你好 " + m.Content + " & <b>"}, nil
	})
	reply, ok, err := deliver(t, e, 2*time.Second, textMsg("hi"))
	if err != nil || !ok {
		t.Fatalf("deliver: ok %v err %v", ok, err)
	}
	var r struct{ Type, Content string }
	if err := json.Unmarshal(reply, &r); err != nil || r.Type != "text" || r.Content != "你好 hi & <b>" {
		t.Fatalf("reply %s", reply)
	}
	// The message reached the backend whole; the 64-bit id as a string.
	if s, _ := seen.Load().(string); !strings.Contains(s, `"msg_id":"1234567890123456789"`) || !strings.Contains(s, `"create_time":1700000000`) {
		t.Fatalf("backend saw %s", s)
	}
}

func TestSubscriberReplyNullAndErrors(t *testing.T) {
	e := newEnv(t)
	c := e.dial()
	subscribe(t, c, client.Filter{}, func(ctx context.Context, msg json.RawMessage) (any, error) {
		var m pushed
		json.Unmarshal(msg, &m)
		switch m.Content {
		case "none":
			return nil, nil
		case "fail":
			return nil, errors.New("backend trouble")
		case "panic":
			panic("backend bug")
		}
		return map[string]string{"type": "text", "content": "ok"}, nil
	})
	if reply, ok, err := deliver(t, e, 2*time.Second, textMsg("none")); reply != nil || !ok || err != nil {
		t.Fatalf("null reply: %s %v %v, want handled without a reply", reply, ok, err)
	}
	for _, content := range []string{"fail", "panic"} {
		if reply, ok, err := deliver(t, e, 2*time.Second, textMsg(content)); reply != nil || !ok || err == nil {
			t.Fatalf("%s: %s %v %v, want an error (\"success\" goes out)", content, reply, ok, err)
		}
	}
	// The subscriber still works afterwards.
	if reply, _, err := deliver(t, e, 2*time.Second, textMsg("again")); err != nil || !strings.Contains(string(reply), `"ok"`) {
		t.Fatalf("after errors: %s %v", reply, err)
	}
}

func TestSubscriberFilters(t *testing.T) {
	e := newEnv(t)
	got := make(chan string, 10)
	handler := func(name string) client.Handler {
		return func(ctx context.Context, msg json.RawMessage) (any, error) {
			got <- name
			return nil, nil
		}
	}
	subscribe(t, e.dial(), client.Filter{MsgTypes: []string{"text", "IMAGE"}}, handler("texts"))
	subscribe(t, e.dial(), client.Filter{Events: []string{"click", "subscribe"}}, handler("clicks"))
	for _, tt := range []struct {
		msg  map[string]any
		want string
	}{
		{textMsg("a"), "texts"},
		{map[string]any{"msg_type": "image"}, "texts"},
		{eventMsg("CLICK"), "clicks"},
		{eventMsg("subscribe"), "clicks"},
		{eventMsg("VIEW"), ""},
		{map[string]any{"msg_type": "voice"}, ""},
	} {
		_, ok, err := deliver(t, e, 2*time.Second, tt.msg)
		if err != nil || ok != (tt.want != "") {
			t.Fatalf("%v: ok %v err %v", tt.msg, ok, err)
		}
		if tt.want != "" {
			if name := <-got; name != tt.want {
				t.Fatalf("%v went to %s, want %s", tt.msg, name, tt.want)
			}
		}
	}
	c := e.dial()
	ctx := context.Background()
	if err := c.Call(ctx, "callback.subscribe", map[string]any{"msg_types": "text"}, nil); client.CodeOf(err) != rpc.CodeInvalidParams {
		t.Fatalf("msg_types not a list: %v", err)
	}
	if err := c.Call(ctx, "callback.subscribe", map[string]any{"events": []string{""}}, nil); client.CodeOf(err) != rpc.CodeInvalidParams {
		t.Fatalf("empty event name: %v", err)
	}
	var echo rpc.Filter
	call(t, c, "callback.subscribe", map[string]any{"events": []string{"SCAN"}}, &echo)
	if len(echo.Events) != 1 || echo.Events[0] != "SCAN" || echo.MsgTypes == nil {
		t.Fatalf("subscribe answered %+v", echo)
	}
}

func TestSubscribersRoundRobin(t *testing.T) {
	e := newEnv(t)
	var mu sync.Mutex
	var order []string
	for _, name := range []string{"a", "b"} {
		subscribe(t, e.dial(), client.Filter{}, func(ctx context.Context, msg json.RawMessage) (any, error) {
			mu.Lock()
			order = append(order, name)
			mu.Unlock()
			return map[string]string{"type": "text", "content": name}, nil
		})
	}
	for range 6 {
		if _, ok, err := deliver(t, e, 2*time.Second, textMsg("x")); !ok || err != nil {
			t.Fatalf("deliver: %v %v", ok, err)
		}
	}
	if got := strings.Join(order, ""); got != "ababab" && got != "bababa" {
		t.Fatalf("deliveries went %s, want them alternating", got)
	}
}

func TestSubscriberTooSlow(t *testing.T) {
	e := newEnv(t)
	c := e.dial()
	answered, release := make(chan struct{}), make(chan struct{})
	subscribe(t, c, client.Filter{}, func(ctx context.Context, msg json.RawMessage) (any, error) {
		defer close(answered)
		<-release
		return map[string]string{"type": "text", "content": "late"}, nil
	})
	// deliver returns at its deadline while the subscriber is still busy:
	// it never waits for the answer past the deadline.
	reply, ok, err := deliver(t, e, 100*time.Millisecond, textMsg("x"))
	if reply != nil || !ok || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("slow subscriber: %s %v %v, want the deadline error", reply, ok, err)
	}
	select {
	case <-answered:
		t.Fatal("the subscriber answered before it was released")
	default:
	}
	close(release)
	<-answered
	poll.Until(t, "the late reply to be logged", func() bool {
		return strings.Contains(e.logs.String(), "late reply to a server request dropped")
	})
}

func TestSubscriberDisconnects(t *testing.T) {
	e := newEnv(t)
	// A bare subscriber that takes the message and hangs up.
	r := e.raw()
	r.send(`{"jsonrpc":"2.0","id":1,"method":"callback.subscribe","params":{}}`)
	if ans := r.recv(); ans.Error != nil {
		t.Fatalf("raw subscribe: %s", ans.raw)
	}
	stays := e.dial()
	var got atomic.Int32
	subscribe(t, stays, client.Filter{}, func(ctx context.Context, msg json.RawMessage) (any, error) {
		got.Add(1)
		return map[string]string{"type": "text", "content": "from the one that stayed"}, nil
	})
	hungUp := make(chan error, 1)
	go func() {
		req, err := r.read()
		if err == nil && req.Method != "callback.message" {
			err = errors.New("got " + string(req.raw))
		}
		r.ws.Close()
		hungUp <- err
	}()
	// The raw subscriber subscribed first, so its turn comes first: it
	// disconnects mid-delivery and the message goes to the other.
	reply, ok, err := deliver(t, e, 2*time.Second, textMsg("x"))
	if err != nil || !ok || !strings.Contains(string(reply), "stayed") {
		t.Fatalf("after a disconnect mid-delivery: %s %v %v", reply, ok, err)
	}
	if err := <-hungUp; err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if reply, _, err := deliver(t, e, 2*time.Second, textMsg("x")); err != nil || !strings.Contains(string(reply), "stayed") {
			t.Fatalf("next messages: %s %v", reply, err)
		}
	}
	if got.Load() != 4 {
		t.Fatalf("the remaining subscriber got %d messages, want 4", got.Load())
	}
	stays.Close()
	poll.Until(t, "both disconnections", func() bool { return strings.Count(e.logs.String(), "rpc disconnected") == 2 })
	if _, ok, err := deliver(t, e, time.Second, textMsg("x")); ok || err != nil {
		t.Fatalf("with no subscriber left: ok %v err %v, want the rules to answer", ok, err)
	}
}

func TestSubscriptionSurvivesReconnect(t *testing.T) {
	e := newEnv(t, func(c *envConfig) { c.opts.ReadLimit = 4 << 10 })
	c := e.dial(func(o *client.Options) { o.MinBackoff = 10 * time.Millisecond })
	subscribe(t, c, client.Filter{MsgTypes: []string{"text"}}, func(ctx context.Context, msg json.RawMessage) (any, error) {
		return map[string]string{"type": "text", "content": "still here"}, nil
	})
	// Oversized: the server drops the connection, the client comes back.
	// A write the drop cut short may be sent again on the next connection,
	// and dropped again, so the call's end is the sign the drops are over.
	if err := c.Call(context.Background(), "session.openid", map[string]string{"session": strings.Repeat("x", 8<<10)}, nil); err == nil {
		t.Fatal("an oversized call succeeded")
	}
	// Until the client has reconnected and resubscribed, a push finds no
	// subscriber (or the dying connection); then it reaches the handler.
	poll.Until(t, "a push to reach the resubscribed handler", func() bool {
		reply, ok, err := deliver(t, e, 2*time.Second, textMsg("x"))
		return err == nil && ok && strings.Contains(string(reply), "still here")
	})
}

// A bad result shape is an error, never a reply.
func TestSubscriberBadResult(t *testing.T) {
	e := newEnv(t)
	r := e.raw()
	r.send(`{"jsonrpc":"2.0","id":1,"method":"callback.subscribe"}`)
	r.recv()
	for _, answer := range []string{
		`"result":"text"`,
		`"result":{"type":"text","content":"no reply member"}`,
		`"result":[1]`,
		`"error":{"code":-32603,"message":"no"}`,
	} {
		sent := r.reply(func(id string) string { return `{"jsonrpc":"2.0","id":` + id + `,` + answer + `}` })
		reply, ok, err := deliver(t, e, 2*time.Second, textMsg("x"))
		if serr := <-sent; serr != nil {
			t.Fatal(serr)
		}
		if reply != nil || !ok || err == nil {
			t.Fatalf("answer %s: %s %v %v, want an error", answer, reply, ok, err)
		}
	}
	// A well-formed answer after all that still counts.
	sent := r.reply(func(id string) string {
		return `{"jsonrpc":"2.0","id":` + id + `,"result":{"reply":{"type":"text","content":"fine"}}}`
	})
	if reply, _, err := deliver(t, e, 2*time.Second, textMsg("x")); err != nil || !strings.Contains(string(reply), "fine") {
		t.Fatalf("good answer: %s %v", reply, err)
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
}
