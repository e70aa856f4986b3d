package appliance_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/100steps/wxappliance/appliance/sandbox"
)

// findChromium returns Debian's chromium, or skips (fails when CI asks for
// the browser test with WXAPPLIANCE_REQUIRE_CHROMIUM=1).
func findChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{os.Getenv("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"} {
		if name == "" {
			continue
		}
		if path, err := exec.LookPath(name); err == nil {
			return path
		}
	}
	msg := "chromium not found: install it with `apt-get install chromium` (or set CHROMIUM=/path/to/chrome) to run the browser test"
	if os.Getenv("WXAPPLIANCE_REQUIRE_CHROMIUM") == "1" {
		t.Fatal(msg)
	}
	// t.Skip's message shows only with -v; a browser test that silently
	// did not run would look like one that passed.
	fmt.Fprintln(os.Stderr, "SKIP "+t.Name()+": "+msg)
	t.Skip(msg)
	return ""
}

// TestBrowserLogin drives a real headless Chromium through the demo page:
// 401, redirect to /auth, the sandbox's authorize page, a click on a test
// user, back on the demo page showing the nickname from /auth/user.
func TestBrowserLogin(t *testing.T) {
	chromium := findChromium(t)
	base := "http://" + serve(t, sandboxConfig(t), nil).addr
	ctx := chromiumContext(t, chromium)

	userLink := chromedp.ID("user-" + sandbox.OpenIDXiaoming)
	err := chromedp.Do(ctx,
		chromedp.Navigate(base+"/sandbox/demo"),
		// The demo page got 401 and sent the browser to WeChat (the sandbox).
		chromedp.WaitVisible(userLink),
	)
	if err != nil {
		t.Fatalf("reaching the authorize page: %v", err)
	}
	location := run(t, ctx, chromedp.Location())
	if !strings.Contains(location, "/sandbox/connect/oauth2/authorize?appid=") {
		t.Fatalf("browser is at %s, want the sandbox authorize page", location)
	}
	if err := chromedp.Do(ctx, chromedp.Click(userLink), chromedp.WaitVisible(chromedp.ID("jssdk"))); err != nil {
		t.Fatalf("after clicking the user: %v", err)
	}
	if location := run(t, ctx, chromedp.Location()); location != base+"/sandbox/demo" {
		t.Fatalf("browser ended at %s, want the demo page", location)
	}
	nickname := run(t, ctx, chromedp.Text(chromedp.ID("nickname")))
	openid := run(t, ctx, chromedp.Text(chromedp.ID("openid")))
	if nickname != sandbox.NicknameXiaoming || openid != sandbox.OpenIDXiaoming {
		t.Fatalf("demo page shows %q / %q, want %q / %q", nickname, openid, sandbox.NicknameXiaoming, sandbox.OpenIDXiaoming)
	}
	if subscribed := run(t, ctx, chromedp.Text(chromedp.ID("subscribed"))); !strings.HasPrefix(subscribed, "是") {
		t.Fatalf("subscribed shows %q", subscribed)
	}
	cfg := run(t, ctx, chromedp.Text(chromedp.ID("jssdk-config")))
	if !strings.Contains(cfg, `"signature"`) || strings.Contains(cfg, "ticket") {
		t.Fatalf("jssdk config on the page: %s", cfg)
	}
}

// chromiumContext starts a headless Chromium for the test and returns a
// context for its actions, which fail after a generous minute.
func chromiumContext(t *testing.T, chromium string) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	browserCtx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(cancel)
	// The first action starts the browser, which lives as long as the
	// context of that call: no timeout on it, only on what follows.
	if err := chromedp.Do(browserCtx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	ctx, cancelTimeout := context.WithTimeout(browserCtx, 60*time.Second)
	t.Cleanup(cancelTimeout)
	return ctx
}

func run[T any](t *testing.T, ctx context.Context, a chromedp.Action[T]) T {
	t.Helper()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
