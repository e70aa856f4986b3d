package rpc_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/100steps/wxappliance/callback"
	"github.com/100steps/wxappliance/rpc/client"
)

// Deliver speaks the callback package's types: the Message's JSON form
// goes out, the Reply comes back decoded strictly.
func TestDeliverCallbackTypes(t *testing.T) {
	e := newEnv(t)
	msg := &callback.Message{ToUserName: "gh_x", FromUserName: "oSBX_tom", CreateTime: 1700000000, MsgType: "event",
		Event: "CLICK", EventKey: "V1001", MsgID: "", Raw: map[string]any{"Event": "CLICK", "EventKey": "V1001"}}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if reply, ok, err := e.srv.Deliver(ctx, msg); reply != nil || ok || err != nil {
		t.Fatalf("nobody subscribed: %+v %v %v", reply, ok, err)
	}

	answers := map[string]any{
		"V1001": callback.Reply{Type: "news", Articles: []callback.Article{{Title: "今日", URL: "https://app.example.com/a?b=1&c=2"}}},
		"NONE":  nil,
		"TYPO":  map[string]any{"type": "text", "content": "x", "contnet": "y"},
	}
	subscribe(t, e.dial(), client.Filter{Events: []string{"click"}}, func(ctx context.Context, raw json.RawMessage) (any, error) {
		var m callback.Message
		if err := json.Unmarshal(raw, &m); err != nil {
			return nil, err
		}
		if m.FromUserName != "oSBX_tom" || m.Raw["EventKey"] != m.EventKey {
			return nil, errors.New("message garbled")
		}
		return answers[m.EventKey], nil
	})

	reply, ok, err := e.srv.Deliver(ctx, msg)
	if err != nil || !ok || reply == nil || reply.Type != "news" || len(reply.Articles) != 1 ||
		reply.Articles[0].URL != "https://app.example.com/a?b=1&c=2" || reply.Validate() != nil {
		t.Fatalf("news reply: %+v %v %v", reply, ok, err)
	}
	msg.EventKey, msg.Raw["EventKey"] = "NONE", "NONE"
	if reply, ok, err := e.srv.Deliver(ctx, msg); reply != nil || !ok || err != nil {
		t.Fatalf("no reply: %+v %v %v", reply, ok, err)
	}
	msg.EventKey, msg.Raw["EventKey"] = "TYPO", "TYPO"
	if _, ok, err := e.srv.Deliver(ctx, msg); !ok || !errors.Is(err, callback.ErrBadReply) {
		t.Fatalf("misspelt member: %v %v, want ErrBadReply", ok, err)
	}
}
