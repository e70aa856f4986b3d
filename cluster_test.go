package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/100steps/wxappliance/appliance/poll"
	"github.com/100steps/wxappliance/appliance/sandbox"
	"github.com/100steps/wxappliance/callback"
	"github.com/100steps/wxappliance/kv/kvtest"
	"github.com/100steps/wxappliance/rpc/client"
)

// These tests run several real binaries on one real Redis, with the fake
// WeChat served alone by the sandbox command, as a team running two or
// three instances behind a load balancer would.

const (
	clusterRPCKey   = "cluster-test-key-0123456789"
	clusterCBToken  = "clustertoken"
	clusterRedisPwd = "redis-pw-never-logged"
)

// cluster is N appliances on one Redis and one standalone sandbox.
type cluster struct {
	t       *testing.T
	redis   *kvtest.RedisServer
	sandbox *process
	configs []string
	addrs   []string
	procs   []*process
}

func newCluster(t *testing.T, n int) *cluster {
	if testing.Short() {
		t.Skip("runs several binaries and a redis-server")
	}
	c := &cluster{t: t, redis: kvtest.StartRedisServer(t, kvtest.RedisServerOptions{AOF: true, Password: clusterRedisPwd})}
	sbAddr := freePort(t)
	c.sandbox = startBinary(t, "http://"+sbAddr, "/", "sandbox", "-listen", sbAddr)
	for range n {
		addr := freePort(t)
		c.addrs = append(c.addrs, addr)
		c.configs = append(c.configs, c.writeConfig(addr))
	}
	// All at once: the cold start is concurrent.
	for i := range n {
		c.procs = append(c.procs, launch(t, "http://"+c.addrs[i], "serve", "-config", c.configs[i]))
	}
	for _, p := range c.procs {
		p.waitReady(t, "/healthz")
	}
	return c
}

func (c *cluster) writeConfig(addr string) string {
	path := filepath.Join(c.t.TempDir(), "config.toml")
	cfg := fmt.Sprintf(`[server]
listen = %q
admin_listen = ""
log_level = "info"
shutdown_timeout = "3s"
[storage]
backend = "redis"
[storage.redis]
url = %q
[wechat]
app_id = %q
app_secret = %q
api_base = %q
api_fallback = []
oauth_base = %q
timeout = "5s"
[oauth]
allowed_return_hosts = ["127.0.0.1"]
login_rate = 0
[callback]
token = %q
[[rpc.keys]]
name = "backend"
key = %q
`, addr, c.redis.URL(), sandbox.DefaultAppID, sandbox.DefaultAppSecret, c.sandbox.base, c.sandbox.base, clusterCBToken, clusterRPCKey)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		c.t.Fatal(err)
	}
	return path
}

// counts is the standalone sandbox's calls per endpoint.
func (c *cluster) counts(t *testing.T) map[string]int {
	t.Helper()
	n, err := sandbox.Counts(c.sandbox.base)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func (c *cluster) rpc(i int) *client.Client {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := client.Dial(ctx, "ws://"+c.addrs[i]+"/rpc", clusterRPCKey, nil)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cl.Close() })
	return cl
}

// loginAcross starts a login on one instance and lets WeChat send the
// browser back to another: what a load balancer does between two requests.
func loginAcross(base, finish, openid string) (string, error) {
	jar, _ := cookiejar.New(nil)
	cl := &http.Client{Jar: jar, Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}
	page := base + "/sandbox-return"
	resp, err := cl.Get(base + "/auth?state=" + url.QueryEscape(page))
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	authorize, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || resp.StatusCode != http.StatusFound {
		return "", fmt.Errorf("/auth: %d %v", resp.StatusCode, err)
	}
	resp, err = cl.Get(authorize.String())
	if err != nil {
		return "", err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	link, ok := sandbox.UserLink(body, openid)
	if !ok {
		return "", fmt.Errorf("no link for %s", openid)
	}
	confirm, err := authorize.Parse(link)
	if err != nil {
		return "", err
	}
	resp, err = cl.Get(confirm.String())
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	back, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		return "", err
	}
	other, _ := url.Parse(finish)
	back.Host = other.Host // the load balancer picked another instance
	resp, err = cl.Get(back.String())
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != page {
		return "", fmt.Errorf("/auth/code on the other instance: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	u, _ := url.Parse(base)
	for _, ck := range jar.Cookies(u) {
		if ck.Name == "wxappliance_session" {
			return ck.Value, nil
		}
	}
	return "", fmt.Errorf("no session cookie")
}

// get answers a GET with the session cookie: status and body.
func get(base, path, session string) (int, string, error) {
	req, _ := http.NewRequest(http.MethodGet, base+path, nil)
	if session != "" {
		req.AddCookie(&http.Cookie{Name: "wxappliance_session", Value: session})
	}
	cl := &http.Client{Timeout: 30 * time.Second}
	resp, err := cl.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

func TestSeveralInstancesOnRedis(t *testing.T) {
	c := newCluster(t, 3)
	base := func(i int) string { return "http://" + c.addrs[i] }

	t.Run("a concurrent cold start fetches one token and one ticket", func(t *testing.T) {
		var wg sync.WaitGroup
		var failed atomic.Int32
		for w := range 24 {
			wg.Go(func() {
				for range 5 {
					resp, err := http.Post(base(w%3)+"/offiaccount/jssdk", "application/json", strings.NewReader(`{"url":"http://127.0.0.1/page"}`))
					if err != nil || resp.StatusCode != 200 {
						failed.Add(1)
					}
					if resp != nil {
						resp.Body.Close()
					}
				}
			})
		}
		wg.Wait()
		if failed.Load() > 0 {
			t.Fatalf("%d JS-SDK signatures failed", failed.Load())
		}
		n := c.counts(t)
		if n["cgi-bin/stable_token"]+n["cgi-bin/token"] != 1 || n["cgi-bin/ticket/getticket"] != 1 {
			t.Fatalf("upstream fetches for 3 instances: %v, want 1 token and 1 ticket", n)
		}
	})

	var sessions []string
	t.Run("logins cross instances", func(t *testing.T) {
		for i := range 3 {
			id, err := loginAcross(base(i), base((i+1)%3), sandbox.OpenIDZhangsan)
			if err != nil {
				t.Fatal(err)
			}
			sessions = append(sessions, id)
			for j := range 3 {
				mustOpenID(t, base(j), id, sandbox.OpenIDZhangsan)
			}
		}
		var me struct{ OpenID string }
		if err := c.rpc(2).Call(t.Context(), "session.openid", map[string]string{"session": sessions[0]}, &me); err != nil || me.OpenID != sandbox.OpenIDZhangsan {
			t.Fatalf("RPC on another instance: %q %v", me.OpenID, err)
		}
	})

	t.Run("a push to any instance reaches a backend on another, once, and retries get the same answer", func(t *testing.T) {
		var got atomic.Int32
		backend := c.rpc(1)
		err := backend.Subscribe(t.Context(), client.Filter{MsgTypes: []string{"text"}}, func(ctx context.Context, msg json.RawMessage) (any, error) {
			got.Add(1)
			return map[string]string{"type": "text", "content": "来自后端"}, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		push := func(i int, msgID string) string {
			ts := fmt.Sprint(time.Now().Unix())
			body := `<xml><ToUserName><![CDATA[gh_sandbox000000]]></ToUserName><FromUserName><![CDATA[oSBX_zhangsan]]></FromUserName>` +
				`<CreateTime>` + ts + `</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[你好]]></Content><MsgId>` + msgID + `</MsgId></xml>`
			q := url.Values{"signature": {callback.Signature(clusterCBToken, ts, "42")}, "timestamp": {ts}, "nonce": {"42"}}
			resp, err := http.Post(base(i)+"/callback?"+q.Encode(), "text/xml", strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 {
				t.Fatalf("push to %d: %d %s", i, resp.StatusCode, b)
			}
			return string(b)
		}
		// The subscription is advertised to the other instances within
		// moments; until then their pushes find no backend.
		warm := 0
		poll.Until(t, "instance 0 to know of the backend on instance 1", func() bool {
			warm++
			return strings.Contains(push(0, fmt.Sprint(1000+warm)), "来自后端")
		})
		before := got.Load()
		first := push(0, "9876543210")
		if !strings.Contains(first, "来自后端") {
			t.Fatalf("push to instance 0 was not answered by the backend on instance 1: %q", first)
		}
		// WeChat's retries land wherever the load balancer sends them.
		for _, i := range []int{2, 1, 0} {
			if again := push(i, "9876543210"); again != first {
				t.Fatalf("retry on instance %d: %q, want the first answer byte for byte %q", i, again, first)
			}
		}
		if n := got.Load() - before; n != 1 {
			t.Fatalf("the backend got the message %d times, want 1", n)
		}
	})

	// load runs requests against the instances listed until stop, counting
	// answers that are not 200. awaitGood waits until n more answers were good.
	load := func(instances []int, sessions []string) (awaitGood func(n int64), stop func() (ok, bad int64)) {
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		var good, failed atomic.Int64
		for w := range 6 {
			wg.Go(func() {
				for i := 0; ctx.Err() == nil; i++ {
					b := base(instances[(w+i)%len(instances)])
					path := "/offiaccount/user"
					if i%2 == 0 {
						path = "/auth/user/openid"
					}
					st, _, err := get(b, path, sessions[(w+i)%len(sessions)])
					switch {
					case err != nil && ctx.Err() != nil:
					case err != nil || st != 200:
						failed.Add(1)
					default:
						good.Add(1)
					}
				}
			})
		}
		awaitGood = func(n int64) {
			target := good.Load() + n
			poll.Until(t, fmt.Sprintf("%d more good answers", n), func() bool { return good.Load() >= target })
		}
		return awaitGood, func() (int64, int64) { cancel(); wg.Wait(); return good.Load(), failed.Load() }
	}

	t.Run("tokens revoked mid-load are replaced once cluster-wide", func(t *testing.T) {
		before := c.counts(t)
		awaitGood, stop := load([]int{0, 1, 2}, sessions)
		awaitGood(60)
		resp, err := http.Post(c.sandbox.base+"/_control/expire", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		awaitGood(120) // every instance's token is used after the revocation
		good, bad := stop()
		if good == 0 || bad > 0 {
			t.Fatalf("under a revoked token: %d good, %d failed answers", good, bad)
		}
		after := c.counts(t)
		if fetched := after["cgi-bin/stable_token"] - before["cgi-bin/stable_token"]; fetched != 1 {
			t.Fatalf("%d token fetches after the revocation, want 1 for the whole cluster", fetched)
		}
	})

	t.Run("kill -9 of one instance under load loses nothing", func(t *testing.T) {
		awaitGood, stop := load([]int{1, 2}, sessions)
		if err := c.procs[0].cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		awaitGood(60)
		good, bad := stop()
		if good == 0 || bad > 0 {
			t.Fatalf("on the survivors: %d good, %d failed answers", good, bad)
		}
		for _, id := range sessions {
			mustOpenID(t, base(1), id, sandbox.OpenIDZhangsan)
			mustOpenID(t, base(2), id, sandbox.OpenIDZhangsan)
		}
	})

	t.Run("Redis down gives 503 and unready, and everything recovers when it is back", func(t *testing.T) {
		c.redis.Stop()
		// An instance's copy of a session may answer for up to a second
		// (oauth's sharedMaxAge) before the store is asked again.
		poll.Until(t, "a 503 with Redis down", func() bool {
			start := time.Now()
			st, body, err := get(base(1), "/auth/user/openid", sessions[0])
			if d := time.Since(start); d > 10*time.Second {
				t.Fatalf("answered after %v: a Redis that is down must not hang requests", d)
			}
			if err != nil || (st != http.StatusServiceUnavailable && st != http.StatusOK) {
				t.Fatalf("with Redis down: %d %s %v", st, body, err)
			}
			return st == http.StatusServiceUnavailable && strings.Contains(body, "存储暂时不可用")
		})
		if st, body, _ := get(base(2), "/readyz", ""); st != http.StatusServiceUnavailable || !strings.Contains(body, `"store"`) {
			t.Fatalf("readyz with Redis down: %d %s", st, body)
		}
		c.redis.Start()
		poll.Until(t, "the instances to be ready again", func() bool {
			st1, _, _ := get(base(1), "/readyz", "")
			st2, _, _ := get(base(2), "/readyz", "")
			return st1 == 200 && st2 == 200
		})
		for _, id := range sessions {
			mustOpenID(t, base(2), id, sandbox.OpenIDZhangsan)
		}
	})

	for i, p := range c.procs {
		if strings.Contains(p.stderr.String(), clusterRedisPwd) {
			t.Fatalf("instance %d logged the Redis password", i)
		}
	}
}

// Moving from one appliance to several: migrate copies the Badger
// directory's logins (and tokens) into Redis, and an instance on Redis
// serves them without a new login or a new token.
func TestMigrateBadgerToRedis(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary and a redis-server")
	}
	dir := filepath.Join(t.TempDir(), "data")
	addr := freePort(t)
	single := start(t, writeSandboxConfig(t, addr, dir), addr)
	id, err := login(single.base, sandbox.OpenIDXiaoming)
	if err != nil {
		t.Fatal(err)
	}
	single.cmd.Process.Signal(syscall.SIGTERM)
	if err := <-single.done; err != nil {
		t.Fatalf("stop: %v\n%s", err, single.stderr)
	}
	single.done <- nil

	redis := kvtest.StartRedisServer(t, kvtest.RedisServerOptions{})
	config := filepath.Join(t.TempDir(), "redis.toml")
	os.WriteFile(config, []byte(fmt.Sprintf(`[server]
listen = %q
admin_listen = ""
[storage]
backend = "redis"
[storage.redis]
url = %q
[wechat]
sandbox = true
[oauth]
allowed_return_hosts = ["127.0.0.1"]
`, addr, redis.URL())), 0o600)
	out, err := execOutput(binary(t), "migrate", "-config", config, "-from", dir)
	if err != nil || !strings.Contains(out, "copied") {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	// Twice is harmless: nothing newer is overwritten.
	if out, err := execOutput(binary(t), "migrate", "-config", config, "-from", dir); err != nil || !strings.Contains(out, "copied 0") {
		t.Fatalf("second migrate: %v\n%s", err, out)
	}
	onRedis := start(t, config, addr)
	mustOpenID(t, onRedis.base, id, sandbox.OpenIDXiaoming)
	if n := onRedis.counts(t)["cgi-bin/stable_token"]; n != 0 {
		t.Fatalf("the instance on Redis fetched the token %d times; the migrated one should serve", n)
	}
	// migrate refuses a Badger config, and backups refuse Redis.
	if out, err := execOutput(binary(t), "migrate", "-config", writeSandboxConfig(t, addr, dir), "-from", dir); err == nil || !strings.Contains(out, `"redis"`) {
		t.Fatalf("migrate into Badger: %v %s", err, out)
	}
	if out, err := execOutput(binary(t), "backup", "-config", config, "-o", filepath.Join(t.TempDir(), "b")); err == nil || !strings.Contains(out, "Redis") {
		t.Fatalf("backup of Redis: %v %s", err, out)
	}
}
