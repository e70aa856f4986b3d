package jssdk_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/100steps/wxappliance/appliance/sandbox"
	"github.com/100steps/wxappliance/appliance/sandbox/sandboxtest"
	"github.com/100steps/wxappliance/jssdk"
	"github.com/100steps/wxappliance/kv/kvtest"
	"github.com/100steps/wxappliance/oauth"
)

func TestSignOfficialVector(t *testing.T) {
	const ticket = "sM4AOVdWfPE4DxkXGEs8VMCPGGVi4C3VM0P37wVUCFvkVAy_90u5h9nbSlYy3-Sl-HhTdfl2fzFy1AOcHKP7qg"
	tests := []struct{ name, url string }{
		{"as documented", "http://mp.weixin.qq.com?params=value"},
		{"fragment cut", "http://mp.weixin.qq.com?params=value#wechat_redirect"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := jssdk.Sign(ticket, "Wm3WZYTPz0wzccnW", 1414587457, tt.url)
			if want := "0f9de62fce790f9a083d5c99e95740ceb90c27ed"; got != want {
				t.Fatalf("signature %s, want %s", got, want)
			}
		})
	}
}

type fixture struct {
	sb  *sandbox.Sandbox
	svc *jssdk.Service
	app *oauth.App
}

func newFixture(t *testing.T, allowed func(string) bool) *fixture {
	t.Helper()
	wx := sandboxtest.New(t, sandboxtest.Options{})
	store := kvtest.Badger(t)
	app := wx.App(store)
	return &fixture{sb: wx.Sandbox, app: app, svc: jssdk.New(app, store, jssdk.Options{AllowedHost: allowed})}
}

func TestConfig(t *testing.T) {
	f := newFixture(t, nil)
	const page = "https://example.com/a/b?x=1&y=%E4%B8%AD"
	before := time.Now().Unix()
	cfg, err := f.svc.Config(context.Background(), page+"#/route")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.AppID != f.sb.AppID() {
		t.Fatalf("appid %q", cfg.AppID)
	}
	if cfg.Timestamp < before || cfg.Timestamp > time.Now().Unix() {
		t.Fatalf("timestamp %d not now", cfg.Timestamp)
	}
	if !regexp.MustCompile(`^[A-Za-z0-9]{16,}$`).MatchString(cfg.NonceStr) {
		t.Fatalf("noncestr %q", cfg.NonceStr)
	}
	// The signature is over the ticket WeChat issued and the page URL exactly
	// as sent, without its fragment.
	ticket := currentTicket(t, f)
	if want := jssdk.Sign(ticket, cfg.NonceStr, cfg.Timestamp, page); cfg.Signature != want {
		t.Fatalf("signature %s, want %s", cfg.Signature, want)
	}
	again, _ := f.svc.Config(context.Background(), page)
	if again.NonceStr == cfg.NonceStr {
		t.Fatal("nonce repeated")
	}
}

// currentTicket asks the sandbox for the ticket, which it returns unchanged
// while valid.
func currentTicket(t *testing.T, f *fixture) string {
	t.Helper()
	var out struct {
		Ticket string `json:"ticket"`
	}
	if err := f.app.CallJSON(context.Background(), oauth.Request{Path: "cgi-bin/ticket/getticket", Query: map[string][]string{"type": {"jsapi"}}}, &out); err != nil {
		t.Fatal(err)
	}
	return out.Ticket
}

func TestConfigRejectsBadURL(t *testing.T) {
	allowed := func(host string) bool { return host == "example.com" }
	f := newFixture(t, allowed)
	for _, u := range []string{"", "#frag", "/relative", "example.com/x", "javascript:alert(1)", "ftp://example.com/",
		"https://evil.com/", "https://user@example.com/", "https://example.com/a b", "https://example.com/\r\nx"} {
		t.Run(u, func(t *testing.T) {
			if _, err := f.svc.Config(context.Background(), u); !errors.Is(err, jssdk.ErrBadURL) {
				t.Fatalf("err = %v, want ErrBadURL", err)
			}
		})
	}
	if f.sb.Count("cgi-bin/ticket/getticket") != 0 {
		t.Fatal("a rejected URL still fetched a ticket")
	}
}

func TestColdStartOneTokenOneTicket(t *testing.T) {
	f := newFixture(t, nil)
	f.sb.SetFault("cgi-bin/stable_token", sandbox.Fault{Latency: 50 * time.Millisecond})
	f.sb.SetFault("cgi-bin/ticket/getticket", sandbox.Fault{Latency: 50 * time.Millisecond})
	const callers = 120
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := f.svc.Config(context.Background(), "https://example.com/")
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := f.sb.Count("cgi-bin/stable_token"); n != 1 {
		t.Fatalf("%d token fetches, want 1", n)
	}
	if n := f.sb.Count("cgi-bin/ticket/getticket"); n != 1 {
		t.Fatalf("%d ticket fetches, want 1", n)
	}
}

func TestTicketFetchSurvivesRejectedToken(t *testing.T) {
	f := newFixture(t, nil)
	if _, err := f.app.Token(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.sb.ExpireTokens()
	if _, err := f.svc.Config(context.Background(), "https://example.com/"); err != nil {
		t.Fatalf("config after token expiry: %v", err)
	}
	if n := f.sb.Count("cgi-bin/stable_token"); n != 2 {
		t.Fatalf("%d token fetches, want 2", n)
	}
}

// Several instances (App and Service each) on one store and bus: a cold
// start under load costs one token fetch and one ticket fetch in all, on
// every backend.
func TestClusterColdStartOneTokenOneTicket(t *testing.T) {
	for _, b := range kvtest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			join := b.Open(t)
			sb := sandbox.New(sandbox.Options{})
			srv := httptest.NewServer(sb)
			t.Cleanup(srv.Close)
			sb.SetFault("cgi-bin/stable_token", sandbox.Fault{Latency: 50 * time.Millisecond})
			sb.SetFault("cgi-bin/ticket/getticket", sandbox.Fault{Latency: 50 * time.Millisecond})
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			t.Cleanup(func() { cancel(); wg.Wait() })
			svcs := make([]*jssdk.Service, 3)
			var app *oauth.App
			for i := range svcs {
				store, bus := join()
				client, err := oauth.NewClient(oauth.ClientConfig{BaseURL: srv.URL, Timeout: 5 * time.Second})
				if err != nil {
					t.Fatal(err)
				}
				inst := oauth.NewApp(client, store, oauth.AppConfig{AppID: sb.AppID(), Secret: "sandbox-secret", Bus: bus})
				svcs[i], app = jssdk.New(inst, store, jssdk.Options{Bus: bus}), inst
				wg.Add(2)
				go func() { defer wg.Done(); inst.Run(ctx) }()
				go func() { defer wg.Done(); svcs[i].Run(ctx) }()
			}
			var calls sync.WaitGroup
			var mu sync.Mutex
			var configs []jssdk.Config
			for _, svc := range svcs {
				for range 20 {
					calls.Add(1)
					go func() {
						defer calls.Done()
						cfg, err := svc.Config(context.Background(), "https://example.com/")
						if err != nil {
							t.Error(err)
							return
						}
						mu.Lock()
						configs = append(configs, cfg)
						mu.Unlock()
					}()
				}
			}
			calls.Wait()
			if n := sb.Count("cgi-bin/stable_token"); n != 1 {
				t.Fatalf("%d token fetches by 3 instances, want 1", n)
			}
			if n := sb.Count("cgi-bin/ticket/getticket"); n != 1 {
				t.Fatalf("%d ticket fetches by 3 instances, want 1", n)
			}
			// Every instance signed with the one ticket WeChat issued.
			f := &fixture{sb: sb, app: app}
			ticket := currentTicket(t, f)
			for _, cfg := range configs {
				if want := jssdk.Sign(ticket, cfg.NonceStr, cfg.Timestamp, "https://example.com/"); cfg.Signature != want {
					t.Fatalf("a config was signed with another ticket")
				}
			}
		})
	}
}
