package rpc_test

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/100steps/wxappliance/appliance/poll"
	"github.com/100steps/wxappliance/rpc"
	"github.com/100steps/wxappliance/rpc/client"
)

// recorder keeps what the Observe hooks of rpc.Options are told.
type recorder struct {
	mu    sync.Mutex
	conns []string // "+key" on connect, "-key" on leave
	calls []observedCall
}

type observedCall struct {
	method string
	code   int64
}

func (r *recorder) conn(key string, connected bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	sign := "-"
	if connected {
		sign = "+"
	}
	r.conns = append(r.conns, sign+key)
}

func (r *recorder) call(method string, code int64, d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, observedCall{method, code})
}

func (r *recorder) snapshot() ([]string, []observedCall) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.conns), slices.Clone(r.calls)
}

// The hooks see connections come and go by key name and every call
// answered, unknown method names folded into "unknown"; Connections lists
// who is connected and whether they subscribed.
func TestObserveConnectionsAndCalls(t *testing.T) {
	rec := &recorder{}
	e := newEnv(t, func(c *envConfig) {
		c.opts.ObserveConn = rec.conn
		c.opts.ObserveCall = rec.call
	})
	if got := e.srv.Connections(); len(got) != 0 {
		t.Fatalf("Connections before any: %+v", got)
	}
	before := time.Now()
	c := e.dial()
	poll.Until(t, "the connection to be observed", func() bool {
		conns, _ := rec.snapshot()
		return slices.Equal(conns, []string{"+backend"})
	})
	conns := e.srv.Connections()
	if len(conns) != 1 || conns[0].Key != "backend" || conns[0].Subscribed || conns[0].Since.Before(before.Add(-time.Second)) || conns[0].Remote == "" {
		t.Fatalf("Connections: %+v", conns)
	}

	var tok struct {
		AccessToken string `json:"access_token"`
	}
	call(t, c, "token.get", nil, &tok)
	callErr(t, c, "no.such.method", nil, rpc.CodeMethodNotFound, 404)
	callErr(t, c, "session.openid", map[string]any{"session": 42}, rpc.CodeInvalidParams, 400)
	subscribe(t, c, client.Filter{}, func(context.Context, json.RawMessage) (any, error) { return nil, nil })

	_, calls := rec.snapshot()
	want := []observedCall{
		{"token.get", 0},
		{"unknown", rpc.CodeMethodNotFound},
		{"session.openid", rpc.CodeInvalidParams},
		{"callback.subscribe", 0},
	}
	if !slices.Equal(calls, want) {
		t.Fatalf("calls observed %v, want %v", calls, want)
	}
	if conns := e.srv.Connections(); len(conns) != 1 || !conns[0].Subscribed {
		t.Fatalf("Connections after subscribing: %+v", conns)
	}

	c.Close()
	poll.Until(t, "the connection's end to be observed", func() bool {
		conns, _ := rec.snapshot()
		return slices.Equal(conns, []string{"+backend", "-backend"})
	})
	if got := e.srv.Connections(); len(got) != 0 {
		t.Fatalf("Connections after leaving: %+v", got)
	}
}
