package appliance_test

import (
	"net"
	"testing"
	"time"

	"github.com/100steps/wxappliance/appliance"
	"github.com/100steps/wxappliance/appliance/poll"
	"github.com/100steps/wxappliance/appliance/sandbox"
)

// routeCase is one browser route and the WeChat endpoint it depends on.
type routeCase struct {
	name     string
	endpoint string
	// prepare runs while WeChat works (a login up to the callback, say)
	// and returns the request under test.
	prepare func(h *harness, b *browser) func() *response
}

func simple(call func(b *browser) *response) func(*harness, *browser) func() *response {
	return func(h *harness, b *browser) func() *response { return func() *response { return call(b) } }
}

var routeCases = []routeCase{
	{"GET /auth/code", "sns/oauth2/access_token", func(h *harness, b *browser) func() *response {
		callback := b.authorize(b.startLogin(returnPage), sandbox.OpenIDZhangsan)
		return func() *response { return b.get(callback) }
	}},
	{"GET /auth/user", "sns/userinfo", simple(func(b *browser) *response { return b.get("/auth/user") })},
	{"GET /offiaccount/user", "cgi-bin/user/info", simple(func(b *browser) *response { return b.get("/offiaccount/user") })},
	{"POST /offiaccount/jssdk", "cgi-bin/ticket/getticket", simple(func(b *browser) *response {
		return b.post("/offiaccount/jssdk", "", `{"url":"https://app.example.com/"}`)
	})},
	{"GET /offiaccount/media", "cgi-bin/media/get", simple(func(b *browser) *response {
		return b.get("/offiaccount/media?media_id=" + sandbox.MediaImage)
	})},
	{"GET /offiaccount/media/raw", "cgi-bin/media/get", simple(func(b *browser) *response {
		return b.get("/offiaccount/media/raw?media_id=" + sandbox.MediaVoice)
	})},
}

// faultTimeout is the WeChat deadline of the fault tests: short, so hangs
// end soon, but long enough for a loaded machine to log in and fetch a
// token within it when WeChat is well.
const faultTimeout = time.Second

// faultAnswerBound is how late a request cut by its deadline may be
// answered on a loaded machine and still show that the deadline, not the
// fault, ended it.
const faultAnswerBound = 10 * time.Second

func faultHarness(t *testing.T, configure ...func(*appliance.Config)) *harness {
	return newHarness(t, append([]func(*appliance.Config){func(c *appliance.Config) {
		c.WeChat.Timeout = appliance.Duration(faultTimeout)
		c.Media.Timeout = appliance.Duration(faultTimeout)
	}}, configure...)...)
}

// wantOK checks a route answered 200 (or the login's 302).
func wantOK(t *testing.T, rc routeCase, resp *response) {
	t.Helper()
	if resp.StatusCode != 200 && resp.StatusCode != 302 {
		t.Fatalf("%s: %d %s", rc.name, resp.StatusCode, resp.body)
	}
}

// Every route, every upstream fault: the documented status within the
// deadline, and a normal answer once WeChat recovers.
func TestEveryRouteUnderUpstreamFaults(t *testing.T) {
	faults := []struct {
		name  string
		fault sandbox.Fault
		msg   string
	}{
		{"hang", sandbox.Fault{Hang: true}, "微信服务器超时"},
		{"5xx", sandbox.Fault{Status: 503}, "微信服务器无法访问"},
		{"busy", sandbox.Fault{Errcode: -1}, "微信服务器超时"},
		{"malformed JSON", sandbox.Fault{Malformed: true}, "微信服务器返回了无法识别的数据"},
	}
	for _, rc := range routeCases {
		for _, f := range faults {
			t.Run(rc.name+"/"+f.name, func(t *testing.T) {
				h := faultHarness(t)
				b := h.browser()
				b.mustLogin(sandbox.OpenIDZhangsan)
				call := rc.prepare(h, b)
				h.sb.SetFault(rc.endpoint, f.fault)
				start := time.Now()
				resp := call()
				elapsed := time.Since(start)
				st, msg := resp.envelope(t)
				if st != 504 || msg != f.msg {
					t.Fatalf("%d %q, want 504 %q", st, msg, f.msg)
				}
				// A hang without a deadline would last until the test's own
				// timeout: an answer within seconds proves the deadline cut
				// it, however loaded the machine.
				if elapsed > faultAnswerBound {
					t.Fatalf("answered after %v", elapsed)
				}
				h.sb.ClearFaults()
				// Once WeChat recovers, requests succeed again: a shared
				// token or ticket fetch that hung ends at its own deadline,
				// and on a busy machine a first try may still miss the deadline.
				poll.Until(t, rc.name+" to succeed after recovery", func() bool {
					resp := rc.prepare(h, b)()
					return resp.StatusCode == 200 || resp.StatusCode == 302
				})
			})
		}
	}
}

func TestEveryRouteFailsOverToFallback(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + ln.Addr().String()
	ln.Close()
	h := newHarness(t, func(c *appliance.Config) {
		c.WeChat.APIFallback = []string{c.WeChat.APIBase}
		c.WeChat.APIBase = down
	})
	b := h.browser()
	b.mustLogin(sandbox.OpenIDZhangsan)
	for _, rc := range routeCases {
		t.Run(rc.name, func(t *testing.T) { wantOK(t, rc, rc.prepare(h, b)()) })
	}
}

func TestEveryRouteSurvivesTokensInvalidated(t *testing.T) {
	h := newHarness(t)
	b := h.browser()
	b.mustLogin(sandbox.OpenIDZhangsan)
	for _, rc := range routeCases {
		t.Run(rc.name, func(t *testing.T) {
			wantOK(t, rc, rc.prepare(h, b)())
			h.sb.ExpireTokens() // every app, ticket and user token dies mid-run
			wantOK(t, rc, rc.prepare(h, b)())
		})
	}
	if n := h.sb.Count("cgi-bin/stable_token"); n > 1+len(routeCases) {
		t.Fatalf("%d token fetches for %d invalidations: refreshes are not shared", n, len(routeCases))
	}
}
