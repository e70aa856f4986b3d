package appliance_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/100steps/wxappliance/rpc/client"
)

// TestStatusPageInBrowser opens the operator's page in headless Chromium
// after the appliance has lived a little: both credentials fetched, pushes
// answered, a backend connected and subscribed, and WeChat refusing a
// token refresh with 40164 (injected through the sandbox's fault control).
// It asserts on the DOM and saves a screenshot, status.png, in
// $WXAPPLIANCE_ARTIFACTS when set, else in the test's artifact directory
// (kept with go test -artifacts; see go help testflag).
func TestStatusPageInBrowser(t *testing.T) {
	chromium := findChromium(t)
	h := newHarness(t, withOps)
	admin := h.admin()
	b := h.browser()
	if r := b.post("/offiaccount/jssdk", "application/json", `{"url":"https://app.example.com/page"}`); r.StatusCode != 200 {
		t.Fatalf("jssdk: %d %s", r.StatusCode, r.body)
	}
	for _, xml := range []string{textPush("910001"), eventPush("subscribe"), eventPush("CLICK")} {
		if st := h.push(opsCallbackToken, xml); st != 200 {
			t.Fatalf("push: %d", st)
		}
	}
	c := h.rpcDial()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := c.Subscribe(ctx, client.Filter{}, func(context.Context, json.RawMessage) (any, error) { return nil, nil })
	if err != nil {
		t.Fatal(err)
	}

	// WeChat refuses the next fetch: the backend reports the token
	// rejected, the appliance asks WeChat, which names the IP it saw.
	token := h.storedValue("cred/access_token")
	ticket := h.storedValue("cred/jsapi_ticket")
	h.fault(`{"endpoint":"cgi-bin/stable_token","errcode":40164,"errmsg":"invalid ip 198.51.100.23 ipv6 ::ffff:198.51.100.23, not in whitelist rid: 6a1b2c3d-0e0f","times":1}`)
	var rerr *client.Error
	if err := rpcCall(t, c, "token.invalidate", map[string]string{"access_token": token}, nil); !errors.As(err, &rerr) || rerr.Data.Errcode != 40164 {
		t.Fatalf("token.invalidate under 40164: %v", err)
	}

	bctx := chromiumContext(t, chromium)
	// A laptop's window, so the screenshot shows the two-column layout.
	err = chromedp.Do(bctx,
		chromedp.EmulateViewport(1280, 900),
		chromedp.Navigate(admin+"/"),
		chromedp.WaitVisible(chromedp.ID("access_token-error")),
	)
	if err != nil {
		t.Fatalf("opening the status page: %v", err)
	}
	text := func(id string) string {
		t.Helper()
		return strings.TrimSpace(run(t, bctx, chromedp.Text(chromedp.ID(id))))
	}
	left, ticketLeft := text("access_token-left"), text("jsapi_ticket-left")
	leftClass := run(t, bctx, chromedp.AttributeValue(chromedp.ID("access_token-left"), "class")).Value
	errcode, ip, hint := text("access_token-errcode"), text("access_token-ip"), text("access_token-hint")
	recent, conns, upstream, health := text("callback-recent"), text("rpc-conns"), text("upstream-errors"), text("health")
	html := run(t, bctx, chromedp.OuterHTML(chromedp.CSS("html")))
	saveScreenshot(t, bctx, "status.png")

	timeLeft := regexp.MustCompile(`^[12]h \d+m$`)
	// The token WeChat granted first is still held and good.
	if !timeLeft.MatchString(left) || leftClass != "ok" || !timeLeft.MatchString(ticketLeft) {
		t.Errorf("time left: token %q (%s), ticket %q", left, leftClass, ticketLeft)
	}
	if errcode != "40164" || ip != "198.51.100.23" || !strings.Contains(hint, "IP白名单") || !strings.Contains(hint, "add it to the IP whitelist") {
		t.Errorf("the 40164: errcode %q, ip %q, hint %q", errcode, ip, hint)
	}
	if !strings.Contains(health, "access_token: the last fetch failed (40164)") {
		t.Errorf("health banner: %q", health)
	}
	for _, want := range []string{"text", "subscribe", "CLICK", "plaintext", "empty"} {
		if !strings.Contains(recent, want) {
			t.Errorf("recent pushes lack %q: %q", want, recent)
		}
	}
	if !strings.Contains(conns, "flask") || !strings.Contains(conns, "yes") {
		t.Errorf("RPC backends: %q", conns)
	}
	if !strings.Contains(upstream, "cgi-bin/stable_token") || !strings.Contains(upstream, "40164") {
		t.Errorf("upstream errors: %q", upstream)
	}
	for what, secret := range map[string]string{"token": token, "ticket": ticket, "push content": "secret words", "rpc key": rpcTestKey} {
		if strings.Contains(html, secret) {
			t.Errorf("the page shows the %s", what)
		}
	}
}

// saveScreenshot writes a PNG of the whole page.
func saveScreenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png := run(t, ctx, chromedp.FullScreenshot(100)) // 100: PNG, not JPEG
	dir := os.Getenv("WXAPPLIANCE_ARTIFACTS")
	if dir == "" {
		dir = t.ArtifactDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}
