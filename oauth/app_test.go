package oauth_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/100steps/wxappliance/appliance/sandbox"
	"github.com/100steps/wxappliance/kv"
	"github.com/100steps/wxappliance/oauth"
)

// upstream is a sandbox behind a real HTTP server.
type upstream struct {
	sb  *sandbox.Sandbox
	srv *httptest.Server
}

func newUpstream(t *testing.T) *upstream {
	t.Helper()
	sb := sandbox.New(sandbox.Options{})
	srv := httptest.NewServer(sb)
	t.Cleanup(srv.Close)
	return &upstream{sb: sb, srv: srv}
}

func openStore(t *testing.T, dir string) *kv.Badger {
	t.Helper()
	store, err := kv.OpenBadger(dir, kv.BadgerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	return store
}

func newClient(t *testing.T, base string, fallbacks ...string) *oauth.Client {
	t.Helper()
	c, err := oauth.NewClient(oauth.ClientConfig{
		BaseURL: base, Fallbacks: fallbacks, Timeout: 2 * time.Second, BusyBackoff: 10 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newApp(t *testing.T, up *upstream, store kv.Store, api string) *oauth.App {
	t.Helper()
	return oauth.NewApp(newClient(t, up.srv.URL), store, oauth.AppConfig{
		AppID: up.sb.AppID(), Secret: "sandbox-secret", TokenAPI: api,
	})
}

func tokenEndpoint(api string) string {
	if api == oauth.TokenAPIToken {
		return "cgi-bin/token"
	}
	return "cgi-bin/stable_token"
}

func TestColdStartFetchesOnce(t *testing.T) {
	for _, api := range []string{oauth.TokenAPIStable, oauth.TokenAPIToken} {
		t.Run(api, func(t *testing.T) {
			up := newUpstream(t)
			// Latency keeps the fetch in flight while every caller arrives.
			up.sb.SetFault(tokenEndpoint(api), sandbox.Fault{Latency: 100 * time.Millisecond})
			app := newApp(t, up, openStore(t, t.TempDir()), api)

			const callers = 150
			var wg sync.WaitGroup
			values := make([]string, callers)
			errs := make([]error, callers)
			for i := range callers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					tok, err := app.Token(context.Background())
					values[i], errs[i] = tok.Value, err
				}()
			}
			wg.Wait()
			for i := range callers {
				if errs[i] != nil {
					t.Fatalf("caller %d: %v", i, errs[i])
				}
				if values[i] != values[0] || values[i] == "" {
					t.Fatalf("caller %d got %q, caller 0 got %q", i, values[i], values[0])
				}
			}
			if n := up.sb.Count(tokenEndpoint(api)); n != 1 {
				t.Fatalf("%d upstream token fetches for %d concurrent callers, want 1", n, callers)
			}
		})
	}
}

func TestRestartReusesStoredToken(t *testing.T) {
	up := newUpstream(t)
	dir := t.TempDir()

	store := openStore(t, dir)
	first, err := newApp(t, up, store, oauth.TokenAPIToken).Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}

	app := newApp(t, up, openStore(t, dir), oauth.TokenAPIToken)
	second, err := app.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if second.Value != first.Value {
		t.Fatalf("after restart got a different token")
	}
	if n := up.sb.Count("cgi-bin/token"); n != 1 {
		t.Fatalf("%d token fetches across a restart, want 1", n)
	}
	if app.TokenFetches() != 0 {
		t.Fatalf("restarted app fetched %d times, want 0", app.TokenFetches())
	}
	// The reused token is accepted upstream.
	if _, err := app.UserInfo(context.Background(), sandbox.OpenIDZhangsan); err != nil {
		t.Fatalf("reused token refused: %v", err)
	}
}

func TestRejectedTokenRefreshedOnceAndRetriedOnce(t *testing.T) {
	t.Run("recovers", func(t *testing.T) {
		up := newUpstream(t)
		app := newApp(t, up, openStore(t, t.TempDir()), oauth.TokenAPIStable)
		ctx := context.Background()
		old, err := app.Token(ctx)
		if err != nil {
			t.Fatal(err)
		}
		up.sb.ExpireTokens()
		if _, err := app.UserInfo(ctx, sandbox.OpenIDZhangsan); err != nil {
			t.Fatalf("call after expiry: %v", err)
		}
		cur, _ := app.Token(ctx)
		if cur.Value == old.Value {
			t.Fatal("token not replaced after 42001")
		}
		if n := up.sb.Count("cgi-bin/stable_token"); n != 2 {
			t.Fatalf("%d token fetches, want 2 (initial and one refresh)", n)
		}
		if n := up.sb.Count("cgi-bin/user/info"); n != 2 {
			t.Fatalf("%d user/info calls, want 2 (rejected and retried)", n)
		}
	})
	t.Run("new token refused too: no loop", func(t *testing.T) {
		up := newUpstream(t)
		app := newApp(t, up, openStore(t, t.TempDir()), oauth.TokenAPIToken)
		up.sb.SetFault("cgi-bin/user/info", sandbox.Fault{Errcode: 40001})
		_, err := app.UserInfo(context.Background(), sandbox.OpenIDZhangsan)
		if !oauth.HasCode(err, 40001) {
			t.Fatalf("err = %v, want errcode 40001", err)
		}
		if n := up.sb.Count("cgi-bin/user/info"); n != 2 {
			t.Fatalf("%d user/info calls, want exactly 2", n)
		}
		if n := up.sb.Count("cgi-bin/token"); n != 2 {
			t.Fatalf("%d token fetches, want 2", n)
		}
	})
}

func TestInvalidateOnlyWhenCurrent(t *testing.T) {
	up := newUpstream(t)
	app := newApp(t, up, openStore(t, t.TempDir()), oauth.TokenAPIToken)
	ctx := context.Background()
	stale, err := app.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	up.sb.SetFault("cgi-bin/token", sandbox.Fault{Latency: 50 * time.Millisecond})
	var wg sync.WaitGroup
	got := make([]string, 50)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok, err := app.InvalidateToken(ctx, stale.Value)
			if err != nil {
				t.Error(err)
			}
			got[i] = tok.Value
		}()
	}
	wg.Wait()
	if n := up.sb.Count("cgi-bin/token"); n != 2 {
		t.Fatalf("%d fetches for 50 reports of one stale token, want 2", n)
	}
	for _, v := range got {
		if v == stale.Value || v != got[0] {
			t.Fatalf("invalidate returned %q; want the one new token %q", v, got[0])
		}
	}
	// Reporting the old token again changes nothing.
	if _, err := app.InvalidateToken(ctx, stale.Value); err != nil {
		t.Fatal(err)
	}
	if n := up.sb.Count("cgi-bin/token"); n != 2 {
		t.Fatalf("stale report after refresh fetched again: %d fetches", n)
	}
}

func TestHangingUpstreamTimesOut(t *testing.T) {
	up := newUpstream(t)
	up.sb.SetFault("cgi-bin/stable_token", sandbox.Fault{Hang: true})
	client, err := oauth.NewClient(oauth.ClientConfig{BaseURL: up.srv.URL, Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	app := oauth.NewApp(client, openStore(t, t.TempDir()), oauth.AppConfig{AppID: up.sb.AppID(), Secret: "sandbox-secret"})
	start := time.Now()
	_, err = app.Token(context.Background())
	elapsed := time.Since(start)
	if !errors.Is(err, oauth.ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
	if elapsed > 300*time.Millisecond+250*time.Millisecond {
		t.Fatalf("gave up after %v, want about the 300ms deadline", elapsed)
	}
}

func TestFailover(t *testing.T) {
	up := newUpstream(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + ln.Addr().String()
	ln.Close() // connection refused from now on

	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "bad gateway", http.StatusBadGateway)
	}))
	defer failing.Close()

	for name, primary := range map[string]string{"primary down": down, "primary 5xx": failing.URL} {
		t.Run(name, func(t *testing.T) {
			up.sb.ResetCounts()
			app := oauth.NewApp(newClient(t, primary, up.srv.URL), openStore(t, t.TempDir()),
				oauth.AppConfig{AppID: up.sb.AppID(), Secret: "sandbox-secret"})
			if _, err := app.Token(context.Background()); err != nil {
				t.Fatalf("no failover: %v", err)
			}
			if n := up.sb.Count("cgi-bin/stable_token"); n != 1 {
				t.Fatalf("fallback saw %d calls, want 1", n)
			}
		})
	}
	t.Run("all down", func(t *testing.T) {
		app := oauth.NewApp(newClient(t, down, failing.URL), openStore(t, t.TempDir()),
			oauth.AppConfig{AppID: up.sb.AppID(), Secret: "sandbox-secret"})
		if _, err := app.Token(context.Background()); !errors.Is(err, oauth.ErrUnavailable) {
			t.Fatalf("err = %v, want ErrUnavailable", err)
		}
	})
}

func TestBusyRetriedOnceQuotaNot(t *testing.T) {
	tests := []struct {
		name      string
		fault     sandbox.Fault
		wantCalls int
		wantErr   int // 0: success
	}{
		{"busy once then ok", sandbox.Fault{Errcode: -1, Times: 1}, 2, 0},
		{"busy twice gives up", sandbox.Fault{Errcode: -1}, 2, -1},
		{"quota is not retried", sandbox.Fault{Errcode: 45009}, 1, 45009},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := newUpstream(t)
			up.sb.SetFault("cgi-bin/stable_token", tt.fault)
			app := newApp(t, up, openStore(t, t.TempDir()), oauth.TokenAPIStable)
			_, err := app.Token(context.Background())
			if tt.wantErr == 0 && err != nil {
				t.Fatalf("err = %v", err)
			}
			if tt.wantErr != 0 && !oauth.HasCode(err, tt.wantErr) {
				t.Fatalf("err = %v, want errcode %d", err, tt.wantErr)
			}
			if n := up.sb.Count("cgi-bin/stable_token"); n != tt.wantCalls {
				t.Fatalf("%d calls, want %d", n, tt.wantCalls)
			}
		})
	}
}

func TestRefreshFailureKeepsValidToken(t *testing.T) {
	up := newUpstream(t)
	now := time.Now()
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	app := oauth.NewApp(newClient(t, up.srv.URL), openStore(t, t.TempDir()), oauth.AppConfig{
		AppID: up.sb.AppID(), Secret: "sandbox-secret", Now: clock,
	})
	first, err := app.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !first.RefreshAt.Before(first.ExpiresAt) || !first.RefreshAt.After(now) {
		t.Fatalf("refresh at %v not inside (now, expiry %v)", first.RefreshAt, first.ExpiresAt)
	}
	// Past the refresh point but before expiry, with WeChat failing.
	mu.Lock()
	now = first.RefreshAt.Add(time.Second)
	mu.Unlock()
	up.sb.SetFault("cgi-bin/stable_token", sandbox.Fault{Status: 503})
	got, err := app.Token(context.Background())
	if err != nil || got.Value != first.Value {
		t.Fatalf("got %v, %v; want the still-valid token", got.Value == first.Value, err)
	}
	// Past expiry the failure shows.
	mu.Lock()
	now = first.ExpiresAt.Add(time.Second)
	mu.Unlock()
	if _, err := app.Token(context.Background()); !errors.Is(err, oauth.ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable after expiry", err)
	}
}

// Several Apps on one store and bus, with cgi-bin/token, where every fetch
// issues a new token: the whole cluster fetches once at a cold start and
// once when WeChat rejects the token, and every call succeeds.
func TestClusterAppsShareOneToken(t *testing.T) {
	forEachBackend(t, func(t *testing.T, join func() (kv.Store, kv.Bus)) {
		up := newUpstream(t)
		up.sb.SetFault("cgi-bin/token", sandbox.Fault{Latency: 50 * time.Millisecond})
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		t.Cleanup(func() { cancel(); wg.Wait() })
		apps := make([]*oauth.App, 3)
		for i := range apps {
			store, bus := join()
			apps[i] = oauth.NewApp(newClient(t, up.srv.URL), store, oauth.AppConfig{
				AppID: up.sb.AppID(), Secret: "sandbox-secret", TokenAPI: oauth.TokenAPIToken, Bus: bus,
			})
			wg.Add(1)
			go func() { defer wg.Done(); apps[i].Run(ctx) }()
		}
		callEverywhere := func(what string) {
			t.Helper()
			var calls sync.WaitGroup
			for _, app := range apps {
				for range 10 {
					calls.Add(1)
					go func() {
						defer calls.Done()
						if _, err := app.UserInfo(context.Background(), sandbox.OpenIDZhangsan); err != nil {
							t.Errorf("%s: %v", what, err)
						}
					}()
				}
			}
			calls.Wait()
		}
		callEverywhere("cold start")
		if n := up.sb.Count("cgi-bin/token"); n != 1 {
			t.Fatalf("%d token fetches for a cold start of 3 instances, want 1", n)
		}
		up.sb.ExpireTokens()
		callEverywhere("after the token was rejected")
		if n := up.sb.Count("cgi-bin/token"); n != 2 {
			t.Fatalf("%d token fetches after one rejection seen by 3 instances, want 2", n)
		}
	})
}
