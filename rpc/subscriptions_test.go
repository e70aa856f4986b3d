package rpc_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/100steps/wxappliance/rpc"
	"github.com/100steps/wxappliance/rpc/client"
)

func TestFilterMatches(t *testing.T) {
	for _, tt := range []struct {
		name           string
		f              rpc.Filter
		msgType, event string
		want           bool
	}{
		{"empty takes everything", rpc.Filter{}, "voice", "", true},
		{"empty lists take everything", rpc.Filter{MsgTypes: []string{}, Events: []string{}}, "event", "VIEW", true},
		{"type", rpc.Filter{MsgTypes: []string{"text"}}, "text", "", true},
		{"type case-insensitive", rpc.Filter{MsgTypes: []string{"IMAGE"}}, "image", "", true},
		{"other type", rpc.Filter{MsgTypes: []string{"text"}}, "image", "", false},
		{"event by name", rpc.Filter{Events: []string{"click"}}, "event", "CLICK", true},
		{"other event", rpc.Filter{Events: []string{"click"}}, "event", "VIEW", false},
		{"event name is not a type", rpc.Filter{Events: []string{"text"}}, "text", "", false},
		{"every event", rpc.Filter{MsgTypes: []string{"event"}}, "event", "subscribe", true},
		{"msg_type event spelt otherwise", rpc.Filter{Events: []string{"subscribe"}}, "EVENT", "subscribe", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.f.Matches(tt.msgType, tt.event); got != tt.want {
				t.Fatalf("%+v.Matches(%q, %q) = %v, want %v", tt.f, tt.msgType, tt.event, got, tt.want)
			}
		})
	}
}

// Matches, Subscriptions and SubscriptionsChanged follow the subscribers
// as they come, change their filter and go.
func TestSubscriptionsHooks(t *testing.T) {
	e := newEnv(t)
	if e.srv.Matches("text", "") || len(e.srv.Subscriptions()) != 0 {
		t.Fatal("a fresh server reports subscribers")
	}
	nothing := func(context.Context, json.RawMessage) (any, error) { return nil, nil }
	waitChange := func(ch <-chan struct{}, what string) {
		t.Helper()
		select {
		case <-ch:
		case <-time.After(10 * time.Second):
			t.Fatalf("no change notice after %s", what)
		}
	}

	changed := e.srv.SubscriptionsChanged()
	c := e.dial()
	subscribe(t, c, client.Filter{Events: []string{"CLICK"}}, nothing)
	waitChange(changed, "a subscription")
	if !e.srv.Matches("event", "click") || e.srv.Matches("text", "") {
		t.Fatal("Matches does not follow the CLICK filter")
	}
	subs := e.srv.Subscriptions()
	if len(subs) != 1 || len(subs[0].Events) != 1 || subs[0].Events[0] != "CLICK" || subs[0].MsgTypes == nil {
		t.Fatalf("Subscriptions = %+v", subs)
	}
	subs[0].Events[0] = "changed by the caller"
	if e.srv.Subscriptions()[0].Events[0] != "CLICK" {
		t.Fatal("Subscriptions shares its slices with the registry")
	}

	changed = e.srv.SubscriptionsChanged()
	subscribe(t, c, client.Filter{MsgTypes: []string{"text"}}, nothing)
	waitChange(changed, "a new filter")
	if !e.srv.Matches("text", "") || e.srv.Matches("event", "CLICK") {
		t.Fatal("Matches does not follow the replaced filter")
	}

	changed = e.srv.SubscriptionsChanged()
	c.Close()
	waitChange(changed, "the subscriber left")
	if e.srv.Matches("text", "") || len(e.srv.Subscriptions()) != 0 {
		t.Fatal("a subscriber that left still counts")
	}
}
