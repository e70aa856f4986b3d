package appliance_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/100steps/wxappliance/appliance"
	"github.com/100steps/wxappliance/appliance/sandbox"
	"github.com/100steps/wxappliance/kv"
	"github.com/100steps/wxappliance/oauth"
	"github.com/100steps/wxappliance/rpc/client"
)

// BenchmarkSessionOpenID compares a backend learning the openid of a
// session over one JSON-RPC connection (session.openid) with the same
// over keep-alive HTTP (GET /auth/user/openid with the cookie), at
// several numbers of concurrent callers. It reports calls/s and the 99th
// percentile latency; BENCHMARKS.md has results.
//
//	go test -run '^$' -bench SessionOpenID -benchtime 20000x ./appliance/
func BenchmarkSessionOpenID(b *testing.B) {
	srv, a, cfg := benchAppliance(b)
	id, err := a.Sessions().Create(context.Background(), oauth.UserToken{
		OpenID: sandbox.OpenIDZhangsan, Scope: oauth.ScopeBase, AccessToken: "unused",
		RefreshToken: "unused", ExpiresAt: time.Now().Add(time.Hour),
	})
	if err != nil {
		b.Fatal(err)
	}
	for _, conc := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("rpc/conc=%d", conc), func(b *testing.B) {
			c, err := client.Dial(context.Background(), "ws"+strings.TrimPrefix(srv.URL, "http")+"/rpc", rpcTestKey, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			params := map[string]string{"session": id}
			measure(b, conc, func() error {
				var got struct{ OpenID string }
				if err := c.Call(context.Background(), "session.openid", params, &got); err != nil {
					return err
				}
				if got.OpenID != sandbox.OpenIDZhangsan {
					return fmt.Errorf("openid %q", got.OpenID)
				}
				return nil
			})
		})
		b.Run(fmt.Sprintf("http/conc=%d", conc), func(b *testing.B) {
			tr := &http.Transport{MaxIdleConnsPerHost: conc}
			defer tr.CloseIdleConnections()
			hc := &http.Client{Transport: tr}
			cookie := cfg.OAuth.SessionCookie + "=" + id
			measure(b, conc, func() error {
				req, _ := http.NewRequest(http.MethodGet, srv.URL+"/auth/user/openid", nil)
				req.Header.Set("Cookie", cookie)
				resp, err := hc.Do(req)
				if err != nil {
					return err
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil {
					return err
				}
				if resp.StatusCode != 200 || !strings.Contains(string(body), sandbox.OpenIDZhangsan) {
					return fmt.Errorf("%d %s", resp.StatusCode, body)
				}
				return nil
			})
		})
	}
}

// measure runs b.N calls of fn from conc goroutines and reports calls/s
// and the latency percentiles.
func measure(b *testing.B, conc int, fn func() error) {
	b.Helper()
	lat := make([][]time.Duration, conc)
	var wg sync.WaitGroup
	var failed sync.Once
	b.ResetTimer()
	start := time.Now()
	for w := range conc {
		n := b.N / conc
		if w < b.N%conc {
			n++
		}
		lat[w] = make([]time.Duration, 0, n)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range n {
				t0 := time.Now()
				if err := fn(); err != nil {
					failed.Do(func() { b.Error(err) })
					return
				}
				lat[w] = append(lat[w], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	all := slices.Concat(lat...)
	if len(all) == 0 {
		return
	}
	slices.Sort(all)
	pct := func(p float64) float64 { return float64(all[int(p*float64(len(all)-1))].Microseconds()) }
	b.ReportMetric(float64(len(all))/elapsed.Seconds(), "calls/s")
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
}

// benchAppliance is the appliance with RPC on, over the sandbox and
// Badger, logging nothing.
func benchAppliance(b *testing.B) (*httptest.Server, *appliance.Appliance, appliance.Config) {
	b.Helper()
	sb := sandbox.New(sandbox.Options{})
	up := httptest.NewServer(sb)
	b.Cleanup(up.Close)
	cfg := appliance.DefaultConfig()
	cfg.Storage.Dir = b.TempDir()
	cfg.WeChat.AppID = sb.AppID()
	cfg.WeChat.AppSecret = sandbox.DefaultAppSecret
	cfg.WeChat.APIBase = up.URL
	cfg.WeChat.APIFallback = nil
	cfg.WeChat.OAuthBase = up.URL
	cfg.OAuth.AllowedReturnHosts = []string{"app.example.com"}
	withRPC(&cfg)
	if err := cfg.Validate(); err != nil {
		b.Fatal(err)
	}
	store, err := kv.OpenBadger(cfg.Storage.Dir, kv.BadgerOptions{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { store.Close() })
	a, err := appliance.New(cfg, appliance.Options{Store: store})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { a.Close() })
	srv := httptest.NewServer(a.Handler())
	b.Cleanup(srv.Close)
	b.Cleanup(func() { a.RPC().Close() })
	return srv, a, cfg
}
