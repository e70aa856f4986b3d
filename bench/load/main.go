// Command load measures the appliance under load, on loopback, with numbers
// anyone can re-run:
//
//	go run ./bench/load -duration 10s -conns 32
//	go run ./bench/load -duration 10s -conns 32 -backend redis -instances 2
//
// It builds the static binary, starts it in sandbox mode with a fresh data
// directory, logs a user in, then drives each scenario for a fixed duration
// with a fixed number of concurrent connections, and drives a
// hello-world net/http server the same way, before and after, as the
// machine's ceiling (their mean is what scenarios are compared with). It
// prints a Markdown report: requests/s, p50 and p99 latency per scenario,
// the appliance's peak RSS, and how many times the appliance fetched the
// access_token and jsapi_ticket from (the sandbox's) WeChat during the run.
//
// With -backend redis it starts its own redis-server (no persistence, on a
// free loopback port, files in its temporary directory) and the fake WeChat
// alone (wxappliance sandbox -listen), then starts -instances appliances on
// them at once, as a cold start of a cluster, and spreads every scenario's
// requests over the instances in turn. The user logs in through the first
// instance; every instance serves that session. The upstream fetches are
// the cluster's, for which central control promises one access_token and
// one jsapi_ticket in all; peak RSS is reported per instance.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/100steps/wxappliance/appliance/sandbox"
	"github.com/100steps/wxappliance/bench/servers"
)

func main() {
	servers.ServeHelloIfAsked()
	var o options
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "how long each scenario runs")
	flag.IntVar(&o.conns, "conns", 32, "concurrent connections per scenario")
	flag.StringVar(&o.bin, "bin", "", "appliance binary (default: build it with CGO_ENABLED=0)")
	flag.StringVar(&o.logLevel, "log-level", "info", "the appliance's server.log_level (logs go to a file)")
	flag.StringVar(&o.only, "only", "", "run only the scenarios whose name contains this")
	flag.StringVar(&o.backend, "backend", "badger", "storage.backend: badger (one instance) or redis")
	flag.IntVar(&o.instances, "instances", 1, "appliances to start (on -backend redis), the load spread over them in turn")
	flag.Float64Var(&o.quiet, "wait-load", 1, "first wait (up to 10 minutes) for the 1-minute load average to drop below this; 0 does not wait")
	flag.Parse()
	if err := o.run(); err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(1)
	}
}

type options struct {
	duration                     time.Duration
	conns, instances             int
	bin, logLevel, only, backend string
	quiet                        float64
}

func (o *options) run() error {
	switch {
	case o.backend != "badger" && o.backend != "redis":
		return fmt.Errorf("-backend %q: want badger or redis", o.backend)
	case o.instances < 1:
		return errors.New("-instances must be at least 1")
	case o.backend == "badger" && o.instances > 1:
		return errors.New("a Badger directory belongs to one process: several instances need -backend redis")
	}
	work, err := os.MkdirTemp("", "wxappliance-load")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	if o.bin == "" {
		if o.bin, err = servers.Build(work); err != nil {
			return err
		}
	}
	servers.WaitQuiet(o.quiet, 10*time.Minute)
	loadBefore := servers.LoadAverage()
	c, err := o.start(work)
	if err != nil {
		return err
	}
	defer c.stop()

	client := newClient(o.conns)
	session, err := login(c.bases[0], sandbox.OpenIDZhangsan)
	if err != nil {
		return fmt.Errorf("login: %w", err)
	}
	scenarios := applianceScenarios(c.bases, session)
	cb, err := callbackScenario(c.bases)
	if err != nil {
		return err
	}
	scenarios = append(scenarios, cb)
	rs, closeRPC, err := rpcScenario(c.bases, session)
	if err != nil {
		return err
	}
	defer closeRPC()
	scenarios = append(scenarios, rs)

	// The ceiling is run before and after the scenarios, and their mean
	// is what the scenarios are compared with: a shared VM's speed drifts
	// within a run.
	hello, err := servers.Hello(work)
	if err != nil {
		return err
	}
	defer hello.Stop()
	before := driveHello(hello.Base, o)

	var results []result
	for _, sc := range scenarios {
		if !strings.Contains(sc.name, o.only) {
			continue
		}
		fmt.Fprintf(os.Stderr, "running %s for %v with %d connections\n", sc.name, o.duration, o.conns)
		results = append(results, drive(sc, client, o.duration, o.conns))
	}
	var mems []servers.Memory
	for _, app := range c.apps {
		m, err := servers.ReadMemory(app.Pid())
		if err != nil {
			return err
		}
		mems = append(mems, m)
	}
	counts, err := sandbox.Counts(c.sandboxRoot)
	if err != nil {
		return err
	}
	var redisMem *servers.Memory
	if c.redis != nil {
		m, err := servers.ReadMemory(c.redis.Pid())
		if err != nil {
			return err
		}
		redisMem = &m
	}

	after := driveHello(hello.Base, o)

	o.report(os.Stdout, loadBefore, results, [2]result{before, after}, mems, redisMem, counts)
	return nil
}

// cluster is what the run started: the appliances, and on Redis the
// redis-server and the fake WeChat they share.
type cluster struct {
	apps        []*servers.Proc
	bases       []string
	sandboxRoot string // where the fake WeChat counts its calls
	redis       *servers.Proc
	sandbox     *servers.Proc
}

func (c *cluster) stop() {
	for _, p := range c.apps {
		p.Stop()
	}
	if c.sandbox != nil {
		c.sandbox.Stop()
	}
	if c.redis != nil {
		c.redis.Stop()
	}
}

// start starts the appliances: one in sandbox mode on Badger, or
// o.instances at once on a redis-server of their own with the fake WeChat
// served alone.
func (o *options) start(work string) (*cluster, error) {
	c := &cluster{}
	common := fmt.Sprintf(`[server]
listen = "%%[1]s"
admin_listen = ""
log_level = %q
[oauth]
allowed_return_hosts = ["127.0.0.1"]
# The load logs in many browsers from one address.
login_rate = 0
[[callback.rules.keywords]]
keyword = "帮助"
content = "可以回复：帮助"
[[rpc.keys]]
name = "load"
key = %q
`, o.logLevel, rpcKey)
	if o.backend == "badger" {
		app, err := servers.Appliance(o.bin, filepath.Join(work, "appliance"), common+fmt.Sprintf(`[storage]
dir = %q
[wechat]
sandbox = true
`, filepath.Join(work, "data")))
		if err != nil {
			return nil, err
		}
		c.apps, c.bases, c.sandboxRoot = []*servers.Proc{app}, []string{app.Base}, app.Base+"/sandbox"
		return c, waitReady(app.Base)
	}

	redis, url, err := servers.Redis(work)
	if err != nil {
		return nil, err
	}
	c.redis = redis
	if c.sandbox, err = servers.Sandbox(o.bin, work); err != nil {
		c.stop()
		return nil, err
	}
	c.sandboxRoot = c.sandbox.Base
	config := common + fmt.Sprintf(`[storage]
backend = "redis"
[storage.redis]
url = %q
[wechat]
app_id = %q
app_secret = %q
api_base = %q
api_fallback = []
oauth_base = %q
[callback]
token = %q
encoding_aes_key = %q
`, url, sandbox.DefaultAppID, sandbox.DefaultAppSecret, c.sandbox.Base, c.sandbox.Base,
		sandbox.DefaultCallbackToken, sandbox.DefaultEncodingAESKey)
	// All at once: the cold start is concurrent, as when a cluster starts.
	apps := make([]*servers.Proc, o.instances)
	errs := make([]error, o.instances)
	var wg sync.WaitGroup
	for i := range o.instances {
		wg.Go(func() {
			apps[i], errs[i] = servers.Appliance(o.bin, filepath.Join(work, fmt.Sprint("appliance", i+1)), config)
		})
	}
	wg.Wait()
	for i, app := range apps {
		if app != nil {
			c.apps = append(c.apps, app)
			c.bases = append(c.bases, app.Base)
		}
		if errs[i] != nil {
			c.stop()
			return nil, errs[i]
		}
	}
	for _, base := range c.bases {
		if err := waitReady(base); err != nil {
			c.stop()
			return nil, err
		}
	}
	return c, nil
}

// waitReady waits for /readyz: the store is open and the access_token is
// there, so that the first scenario does not measure the cold fetch.
func waitReady(base string) error { return servers.WaitUp(base + "/readyz") }

// scenario is one kind of request, built fresh for each call.
type scenario struct {
	name    string
	request func() (*http.Request, error)
	// call replaces request for scenarios that are not plain HTTP
	// requests (WebSocket RPC); it must be safe for concurrent use.
	call func(worker int) error
	// setup runs once per worker before the clock starts.
	setup func(worker int) error
}

// roundRobin returns the bases in turn, one per call, from any goroutine:
// how a load balancer without affinity spreads requests.
func roundRobin(bases []string) func() string {
	var n atomic.Uint64
	return func() string { return bases[(n.Add(1)-1)%uint64(len(bases))] }
}

func getRequest(base func() string, pathAndHeaders ...string) func() (*http.Request, error) {
	path, headers := "", pathAndHeaders
	if len(pathAndHeaders)%2 == 1 {
		path, headers = pathAndHeaders[0], pathAndHeaders[1:]
	}
	return func() (*http.Request, error) {
		req, err := http.NewRequest(http.MethodGet, base()+path, nil)
		if err != nil {
			return nil, err
		}
		for i := 0; i+1 < len(headers); i += 2 {
			req.Header.Set(headers[i], headers[i+1])
		}
		return req, nil
	}
}

func applianceScenarios(bases []string, session string) []scenario {
	cookie := "wxappliance_session=" + session
	jssdkBase := roundRobin(bases)
	return []scenario{
		{name: "GET /auth/user/openid (cookie)", request: getRequest(roundRobin(bases), "/auth/user/openid", "Cookie", cookie)},
		{name: "POST /offiaccount/jssdk", request: func() (*http.Request, error) {
			return http.NewRequest(http.MethodPost, jssdkBase()+"/offiaccount/jssdk",
				strings.NewReader(`{"url":"http://127.0.0.1/page?x=1"}`))
		}},
		{name: "GET /offiaccount/media (64 KiB)", request: getRequest(roundRobin(bases), "/offiaccount/media?media_id=sandbox-64k")},
	}
}

type result struct {
	name      string
	ok, fails int64
	elapsed   time.Duration
	latencies []time.Duration
	firstErr  error
}

func (r result) rate() float64 { return float64(r.ok) / r.elapsed.Seconds() }

func (r result) percentile(p float64) time.Duration {
	if len(r.latencies) == 0 {
		return 0
	}
	i := int(float64(len(r.latencies)-1) * p)
	return r.latencies[i]
}

// drive runs sc on conns workers for duration and records every latency.
func drive(sc scenario, client *http.Client, duration time.Duration, conns int) result {
	var (
		ok, fails atomic.Int64
		mu        sync.Mutex
		all       []time.Duration
		firstErr  error
		wg        sync.WaitGroup
	)
	for w := range conns {
		if sc.setup != nil {
			if err := sc.setup(w); err != nil {
				return result{name: sc.name, firstErr: err}
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), duration)
	defer cancel()
	begin := time.Now()
	for w := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := make([]time.Duration, 0, 4096)
			for ctx.Err() == nil {
				start := time.Now()
				err := once(sc, client, w)
				if ctx.Err() != nil && err != nil {
					break // cut off by the end of the run
				}
				if err != nil {
					fails.Add(1)
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					continue
				}
				local = append(local, time.Since(start))
				ok.Add(1)
			}
			mu.Lock()
			all = append(all, local...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(begin)
	slices.Sort(all)
	return result{name: sc.name, ok: ok.Load(), fails: fails.Load(), elapsed: elapsed, latencies: all, firstErr: firstErr}
}

func once(sc scenario, client *http.Client, worker int) error {
	if sc.call != nil {
		return sc.call(worker)
	}
	req, err := sc.request()
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: HTTP %d", sc.name, resp.StatusCode)
	}
	return nil
}

func newClient(conns int) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = conns * 2
	t.MaxIdleConnsPerHost = conns * 2
	t.DisableCompression = true
	return &http.Client{Transport: t, Timeout: 30 * time.Second}
}

// driveHello runs the hello-world server at base as the machine's ceiling.
func driveHello(base string, o *options) result {
	fmt.Fprintf(os.Stderr, "running the hello-world ceiling\n")
	return drive(scenario{name: "hello-world net/http (ceiling)", request: getRequest(roundRobin([]string{base + "/"}))}, newClient(o.conns), o.duration, o.conns)
}

func (o *options) report(w io.Writer, loadBefore string, results []result, hello [2]result, mems []servers.Memory, redisMem *servers.Memory, counts map[string]int) {
	host, _ := os.Hostname()
	cmd := fmt.Sprintf("go run ./bench/load -duration %v -conns %d", o.duration, o.conns)
	setup := "one appliance on Badger"
	if o.backend == "redis" {
		cmd += fmt.Sprintf(" -backend redis -instances %d", o.instances)
		setup = fmt.Sprintf("%d appliance(s) on one redis-server, the load spread over them in turn", o.instances)
	}
	fmt.Fprintf(w, "Run: `%s` (%s; log_level %s, logs to files), %s, %d CPUs, %s/%s, host %s, %s, load average before it %s.\n\n",
		cmd, setup, o.logLevel, runtime.Version(), runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, host, time.Now().UTC().Format("2006-01-02"), loadBefore)
	fmt.Fprintln(w, "| scenario | req/s | p50 | p99 | errors | vs ceiling |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|")
	hello[0].name = "hello-world net/http (ceiling, before)"
	hello[1].name = "hello-world net/http (ceiling, after)"
	ceiling := (hello[0].rate() + hello[1].rate()) / 2
	rows := append([]result{hello[0]}, results...)
	rows = append(rows, hello[1])
	for _, r := range rows {
		fmt.Fprintf(w, "| %s | %.0f | %v | %v | %d | %.0f%% |\n", r.name, r.rate(),
			r.percentile(0.50).Round(time.Microsecond), r.percentile(0.99).Round(time.Microsecond),
			r.fails, 100*r.rate()/ceiling)
	}
	fmt.Fprintln(w)
	for i, m := range mems {
		name := "Appliance"
		if len(mems) > 1 {
			name = fmt.Sprintf("Instance %d", i+1)
		}
		fmt.Fprintf(w, "%s peak RSS (VmHWM): %s; at the end %s anonymous + %s file-backed.\n",
			name, servers.MiB(m.Peak), servers.MiB(m.Anon), servers.MiB(m.File))
	}
	if redisMem != nil {
		fmt.Fprintf(w, "redis-server peak RSS: %s.\n", servers.MiB(redisMem.Peak))
	}
	fmt.Fprintf(w, "Upstream fetches during the whole run, all instances together: access_token %d, jsapi_ticket %d.\n",
		counts["cgi-bin/stable_token"]+counts["cgi-bin/token"], counts["cgi-bin/ticket/getticket"])
	for _, r := range rows {
		if r.firstErr != nil {
			fmt.Fprintf(w, "\nFirst error in %s: %v\n", r.name, r.firstErr)
		}
	}
}
