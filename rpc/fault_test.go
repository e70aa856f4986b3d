package rpc_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/100steps/wxappliance/appliance/poll"
	"github.com/100steps/wxappliance/appliance/sandbox"
	"github.com/100steps/wxappliance/rpc"
)

// methodCase is one RPC method that reaches WeChat and its endpoint.
type methodCase struct {
	method   string
	endpoint string
	params   func(e *env) any
}

var methodCases = []methodCase{
	{"session.user", "sns/userinfo", func(e *env) any {
		return map[string]string{"session": e.login(sandbox.OpenIDZhangsan, "snsapi_userinfo")}
	}},
	{"user.get", "cgi-bin/user/info", func(*env) any { return map[string]string{"openid": sandbox.OpenIDZhangsan} }},
	{"media.get", "cgi-bin/media/get", func(*env) any { return map[string]string{"media_id": sandbox.MediaVoice} }},
	{"jssdk.config", "cgi-bin/ticket/getticket", func(*env) any { return map[string]string{"url": "https://app.example.com/"} }},
	{"token.get", "cgi-bin/stable_token", func(*env) any { return map[string]string{} }},
	{"token.invalidate", "cgi-bin/stable_token", func(*env) any { return map[string]string{"access_token": "stale"} }},
	{"wechat.call", "cgi-bin/get_current_selfmenu_info", func(*env) any {
		return map[string]any{"method": "GET", "path": "cgi-bin/get_current_selfmenu_info"}
	}},
}

// rpcFaultTimeout is the WeChat deadline of the fault tests: short, so
// hangs end soon, but long enough for a loaded machine to work within it
// when WeChat is well.
const rpcFaultTimeout = time.Second

// faultAnswerBound is how late a call cut by its deadline may be
// answered on a loaded machine and still show that the deadline, not the
// fault, ended it.
const faultAnswerBound = 10 * time.Second

func faultEnv(t *testing.T) *env {
	return newEnv(t, func(c *envConfig) {
		c.opts.CallTimeout = rpcFaultTimeout
		c.opts.MediaTimeout = rpcFaultTimeout
		c.upstream = rpcFaultTimeout
	})
}

// Every method that reaches WeChat, under every upstream fault: error
// -32004 with data {504, msg} within the deadline, and a normal answer once
// WeChat recovers.
func TestEveryMethodUnderUpstreamFaults(t *testing.T) {
	faults := []struct {
		name  string
		fault sandbox.Fault
	}{
		{"hang", sandbox.Fault{Hang: true}},
		{"5xx", sandbox.Fault{Status: 502}},
		{"busy", sandbox.Fault{Errcode: -1}},
		{"malformed JSON", sandbox.Fault{Malformed: true}},
	}
	for _, mc := range methodCases {
		for _, f := range faults {
			t.Run(mc.method+"/"+f.name, func(t *testing.T) {
				e := faultEnv(t)
				c := e.dial()
				params := mc.params(e)
				e.sb.SetFault(mc.endpoint, f.fault)
				start := time.Now()
				callErr(t, c, mc.method, params, rpc.CodeTimeout, 504)
				// A hang without a deadline would last until the test's own
				// timeout: an answer within seconds proves the deadline cut
				// it, however loaded the machine.
				if elapsed := time.Since(start); elapsed > faultAnswerBound {
					t.Fatalf("answered after %v", elapsed)
				}
				e.sb.ClearFaults()
				// Once WeChat recovers, calls succeed again: a shared fetch
				// that hung ends at its own deadline, and on a busy machine
				// a first call may still miss its deadline.
				poll.Until(t, "a call to succeed after recovery", func() bool {
					return c.Call(context.Background(), mc.method, params, nil) == nil
				})
			})
		}
	}
}

func TestEveryMethodSurvivesTokensInvalidated(t *testing.T) {
	e := faultEnv(t)
	c := e.dial()
	for _, mc := range methodCases {
		t.Run(mc.method, func(t *testing.T) {
			params := mc.params(e)
			call(t, c, mc.method, params, nil)
			e.sb.ExpireTokens()
			call(t, c, mc.method, params, nil)
		})
	}
}

func TestEveryMethodFailsOverToFallback(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + ln.Addr().String()
	ln.Close()
	e := newEnv(t, func(c *envConfig) { c.primary = down })
	c := e.dial()
	for _, mc := range methodCases {
		t.Run(mc.method, func(t *testing.T) { call(t, c, mc.method, mc.params(e), nil) })
	}
}
