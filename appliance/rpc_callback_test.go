package appliance

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/100steps/wxappliance/appliance/poll"
	"github.com/100steps/wxappliance/appliance/sandbox"
	"github.com/100steps/wxappliance/callback"
	"github.com/100steps/wxappliance/rpc/client"
)

const subscriberKey = "subscriber-key-0123456789"

// newSubscriberEnv is the callback environment with RPC on.
func newSubscriberEnv(t *testing.T, mutate func(*Config)) *callbackEnv {
	t.Helper()
	e := newCallbackEnv(t, func(c *Config) {
		c.RPC.Keys = []RPCKey{{Name: "bot", Key: subscriberKey}}
		if mutate != nil {
			mutate(c)
		}
	})
	// Before the test server closes: it waits for handlers, and an RPC
	// connection's lasts as long as the connection.
	t.Cleanup(func() { e.a.RPC().Close() })
	return e
}

// subscriber connects a backend that answers the pushes matching f with
// answer.
func (e *callbackEnv) subscriber(f client.Filter, answer func(m callback.Message) (any, error)) *client.Client {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, "ws"+strings.TrimPrefix(e.srv.URL, "http")+e.cfg.RPC.Path, subscriberKey, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	err = c.Subscribe(ctx, f, func(ctx context.Context, raw json.RawMessage) (any, error) {
		var m callback.Message
		if err := json.Unmarshal(raw, &m); err != nil {
			return nil, err
		}
		return answer(m)
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

func textReply(content string) *callback.Reply {
	return &callback.Reply{Type: callback.ReplyText, Content: content}
}

// push sends a text message in safe mode, as WeChat does for an account
// with an EncodingAESKey, and returns the reply's content, or "success".
func (e *callbackEnv) push(msgID, content string) string {
	e.t.Helper()
	return e.pushXML(message(msgID, content), sandbox.OpenIDZhangsan)
}

func (e *callbackEnv) pushXML(msg, from string) string {
	e.t.Helper()
	q, body := e.sealed(msg, false)
	a := e.do(http.MethodPost, e.cfg.Callback.Path, q, body)
	if a.status != 200 {
		e.t.Fatalf("push: %d %s", a.status, a.body)
	}
	if string(a.body) == callback.Success {
		return callback.Success
	}
	m, err := callback.ParseMessage([]byte(e.open(a.body)))
	if err != nil || m.ToUserName != from || m.FromUserName != sandbox.OriginalID {
		e.t.Fatalf("push: reply %+v (%v)", m, err)
	}
	return m.Content
}

// A subscriber's reply is the passive reply WeChat receives, in the mode
// the message came in, before the rules are asked.
func TestCallbackRPCSubscriberAnswers(t *testing.T) {
	e := newSubscriberEnv(t, nil)
	var seen sync.Map
	e.subscriber(client.Filter{MsgTypes: []string{"text"}}, func(m callback.Message) (any, error) {
		seen.Store(m.MsgID, m)
		return textReply("收到：" + m.Content + " ]]> & <b>"), nil
	})

	if got := e.push("101", "你好"); got != "收到：你好 ]]> & <b>" {
		t.Fatalf("reply %q", got)
	}
	v, ok := seen.Load("101")
	if m, _ := v.(callback.Message); !ok || m.FromUserName != sandbox.OpenIDZhangsan || m.ToUserName != sandbox.OriginalID ||
		m.MsgType != "text" || m.Raw["Content"] != "你好" {
		t.Fatalf("the backend saw %+v", v)
	}
	// Before the rules: a keyword rule would have answered this one.
	if got := e.push("102", "帮助"); got != "收到：帮助 ]]> & <b>" {
		t.Fatalf("keyword message: %q", got)
	}
	// Not subscribed to events: the rules greet.
	sub := `<xml><ToUserName><![CDATA[` + sandbox.OriginalID + `]]></ToUserName><FromUserName><![CDATA[` + sandbox.OpenIDLisi +
		`]]></FromUserName><CreateTime>` + now() + `</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe]]></Event></xml>`
	if got := e.pushXML(sub, sandbox.OpenIDLisi); got != "欢迎 welcome" {
		t.Fatalf("subscribe event: %q", got)
	}

	// Plaintext mode (明文模式): the reply goes back in the clear.
	p := newSubscriberEnv(t, func(c *Config) { c.Callback.Token = "plaintoken" })
	p.subscriber(client.Filter{}, func(m callback.Message) (any, error) { return textReply("明文 " + m.Content), nil })
	a := p.do(http.MethodPost, p.cfg.Callback.Path, p.signed(now()), []byte(message("104", "hi")))
	if m, err := callback.ParseMessage(a.body); a.status != 200 || err != nil || m.Content != "明文 hi" {
		t.Fatalf("plaintext: %d %v %s", a.status, err, a.body)
	}
}

// A reply that is not a valid one, or an error, gives "success".
func TestCallbackRPCSubscriberBadReply(t *testing.T) {
	e := newSubscriberEnv(t, nil)
	e.subscriber(client.Filter{}, func(m callback.Message) (any, error) {
		switch m.Content {
		case "typo":
			return map[string]string{"type": "text", "contents": "x"}, nil
		case "empty":
			return textReply(""), nil
		case "none":
			return nil, nil
		}
		return nil, context.Canceled
	})
	for i, content := range []string{"typo", "empty", "none", "error"} {
		if got := e.push(string(rune('a'+i))+"200", content); got != callback.Success {
			t.Fatalf("%s: %q, want success", content, got)
		}
	}
}

// A subscriber slower than callback.reply_timeout: "success" goes out on
// time, its late reply is dropped, and WeChat's retry gets the stored
// "success" without a second delivery.
func TestCallbackRPCSubscriberTooSlow(t *testing.T) {
	e := newSubscriberEnv(t, func(c *Config) { c.Callback.ReplyTimeout = Duration(300 * time.Millisecond) })
	release := make(chan struct{})
	var deliveries atomic.Int32
	e.subscriber(client.Filter{}, func(m callback.Message) (any, error) {
		deliveries.Add(1)
		<-release
		return textReply("too late"), nil
	})
	// The answer comes while the backend is still blocked: the appliance
	// did not wait for it.
	q, body := e.sealed(message("301", "hi"), false)
	first := e.do(http.MethodPost, e.cfg.Callback.Path, q, body)
	close(release)
	if first.status != 200 || string(first.body) != callback.Success {
		t.Fatalf("slow subscriber: %d %q", first.status, first.body)
	}
	retry := e.do(http.MethodPost, e.cfg.Callback.Path, q, body)
	if string(retry.body) != callback.Success || deliveries.Load() != 1 {
		t.Fatalf("retry: %q after %d deliveries; want the stored success and one delivery", retry.body, deliveries.Load())
	}
}

// Two subscribers take turns; one that disconnects is dropped, even in the
// middle of a delivery, and the rules answer when none is left.
func TestCallbackRPCSubscribersTakeTurnsAndDrop(t *testing.T) {
	e := newSubscriberEnv(t, nil)
	var leaving *client.Client
	leaving = e.subscriber(client.Filter{}, func(m callback.Message) (any, error) {
		if m.Content == "bye" {
			leaving.Close() // gone without answering
			return nil, nil
		}
		return textReply("A"), nil
	})
	staying := e.subscriber(client.Filter{}, func(m callback.Message) (any, error) {
		return textReply("B"), nil
	})

	var got []string
	for i := range 4 {
		got = append(got, e.push(string(rune('0'+i))+"400", "hi"))
	}
	if s := strings.Join(got, ""); s != "ABAB" && s != "BABA" {
		t.Fatalf("replies %s, want them alternating", s)
	}
	// Whichever's turn it is, "bye" ends with B: A leaves mid-delivery and
	// the message goes on to B.
	if r := e.push("410", "bye"); r != "B" {
		t.Fatalf("after A left mid-delivery: %q", r)
	}
	for i := range 3 {
		if r := e.push(string(rune('0'+i))+"420", "hi"); r != "B" {
			t.Fatalf("with A gone: %q", r)
		}
	}
	staying.Close()
	if r := e.push("430", "帮助"); r != "帮助内容 ]]> <b>" {
		t.Fatalf("with no subscriber left the rules answer, got %q", r)
	}
}

// A backend's reply that misses callback.reply_timeout reaches the user as
// a customer service message: WeChat got "success" at once, the sandbox
// (standing in for WeChat) receives the reply through custom/send.
func TestLateReplyBecomesCustomMessage(t *testing.T) {
	e := newSubscriberEnv(t, func(c *Config) { c.Callback.ReplyTimeout = Duration(300 * time.Millisecond) })
	release := make(chan struct{})
	e.subscriber(client.Filter{}, func(m callback.Message) (any, error) {
		<-release
		return textReply("慢一点的回复 " + m.Content), nil
	})
	if got := e.push("77001", "在吗"); got != callback.Success {
		t.Fatalf("WeChat got %q, want success at the deadline", got)
	}
	close(release)
	poll.Until(t, "the late reply to reach the sandbox as a customer service message", func() bool {
		for _, m := range e.a.sandbox.CustomMessages() {
			if strings.Contains(string(m), `"touser":"`+sandbox.OpenIDZhangsan+`"`) && strings.Contains(string(m), "慢一点的回复 在吗") {
				return true
			}
		}
		return false
	})
	// WeChat's retry gets the stored "success" and sends nothing more.
	if got := e.push("77001", "在吗"); got != callback.Success {
		t.Fatalf("retry: %q", got)
	}
	if n := len(e.a.sandbox.CustomMessages()); n != 1 {
		t.Fatalf("%d customer service messages, want 1", n)
	}
}

// callback.late_reply = "drop" keeps the old behaviour: nothing is sent.
func TestLateReplyDrop(t *testing.T) {
	e := newSubscriberEnv(t, func(c *Config) {
		c.Callback.ReplyTimeout = Duration(time.Second)
		c.Callback.LateReply = LateReplyDrop
	})
	release := make(chan struct{})
	received := make(chan struct{}, 8)
	e.subscriber(client.Filter{}, func(m callback.Message) (any, error) {
		received <- struct{}{}
		<-release // past the deadline
		return textReply("too late"), nil
	})
	// Without a late window the request to the backend ends with the
	// deadline, so on a busy machine it may end before it was sent:
	// push again until the backend got one.
	for i := 0; ; i++ {
		if got := e.push(fmt.Sprint(77002+i), "x"); got != callback.Success {
			t.Fatalf("WeChat got %q", got)
		}
		select {
		case <-received:
		case <-time.After(2 * time.Second):
			if i < 4 {
				continue
			}
			t.Fatal("no message reached the backend before its deadline in 5 tries")
		}
		break
	}
	close(release)
	// Dropped where it lands: by the RPC layer once the request has
	// ended, or by the callback when the reply beat the request's end
	// but not the answer to WeChat.
	poll.Until(t, "the late reply to be dropped", func() bool {
		logs := e.logs.String()
		return strings.Contains(logs, "late reply to a server request dropped") ||
			strings.Contains(logs, "came after the deadline and was dropped")
	})
	if n := len(e.a.sandbox.CustomMessages()); n != 0 {
		t.Fatalf("%d customer service messages with late_reply = drop", n)
	}
}

// WeChat refusing a late reply (45015: the user wrote more than 48 hours
// ago; the sandbox's unsubscribed user stands in for that) is said once,
// with what to do, however often it happens.
func TestLateReplyRefusalAdvisedOnce(t *testing.T) {
	e := newSubscriberEnv(t, func(c *Config) { c.Callback.ReplyTimeout = Duration(300 * time.Millisecond) })
	var replies atomic.Int32
	release := make(chan struct{})
	e.subscriber(client.Filter{}, func(m callback.Message) (any, error) {
		<-release
		defer replies.Add(1)
		return textReply("late"), nil
	})
	for _, id := range []string{"78001", "78002"} {
		msg := strings.Replace(message(id, "x"), sandbox.OpenIDZhangsan, sandbox.OpenIDLisi, 1)
		if got := e.pushXML(msg, sandbox.OpenIDLisi); got != callback.Success {
			t.Fatalf("WeChat got %q", got)
		}
	}
	close(release)
	poll.Until(t, "both late replies to be refused", func() bool {
		return strings.Count(e.logs.String(), "callback late reply not delivered") == 2
	})
	if n := strings.Count(e.logs.String(), "48 hours"); n != 1 {
		t.Fatalf("the advice for 45015 was logged %d times, want once:\n%s", n, e.logs)
	}
	if n := len(e.a.sandbox.CustomMessages()); n != 0 {
		t.Fatalf("%d messages delivered to a user outside the window", n)
	}
}
