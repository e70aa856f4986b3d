// Command load measures the appliance under load, on loopback, with numbers
// anyone can re-run:
//
//	go run ./bench/load -duration 10s -conns 32
//
// It builds the static binary, starts it in sandbox mode with a fresh data
// directory, logs a user in, then drives each scenario for a fixed duration
// with a fixed number of concurrent connections, and finally drives a
// hello-world net/http server the same way as the machine's ceiling. It
// prints a Markdown report: requests/s, p50 and p99 latency per scenario,
// the appliance's peak RSS, and how many times the appliance fetched the
// access_token and jsapi_ticket from (the sandbox's) WeChat during the run.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "hello" {
		serveHello(os.Args[2])
		return
	}
	duration := flag.Duration("duration", 10*time.Second, "how long each scenario runs")
	conns := flag.Int("conns", 32, "concurrent connections per scenario")
	bin := flag.String("bin", "", "appliance binary (default: build it with CGO_ENABLED=0)")
	logLevel := flag.String("log-level", "info", "the appliance's server.log_level (logs go to a file)")
	only := flag.String("only", "", "run only the scenarios whose name contains this")
	flag.Parse()
	if err := run(*duration, *conns, *bin, *logLevel, *only); err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(1)
	}
}

func run(duration time.Duration, conns int, bin, logLevel, only string) error {
	work, err := os.MkdirTemp("", "wxappliance-load")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	if bin == "" {
		bin = filepath.Join(work, "wxappliance")
		cmd := exec.Command("go", "build", "-trimpath", "-o", bin, ".")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		cmd.Stderr = os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("build: %w", err)
		}
	}
	app, err := startAppliance(bin, work, logLevel)
	if err != nil {
		return err
	}
	defer app.stop()

	client := newClient(conns)
	session, err := login(app.base)
	if err != nil {
		return fmt.Errorf("login: %w", err)
	}
	scenarios := applianceScenarios(app.base, session)
	cb, err := callbackScenario(app.base)
	if err != nil {
		return err
	}
	scenarios = append(scenarios, cb)
	rs, closeRPC, err := rpcScenario(app.base, session)
	if err != nil {
		return err
	}
	defer closeRPC()
	scenarios = append(scenarios, rs)

	var results []result
	for _, sc := range scenarios {
		if !strings.Contains(sc.name, only) {
			continue
		}
		fmt.Fprintf(os.Stderr, "running %s for %v with %d connections\n", sc.name, duration, conns)
		results = append(results, drive(sc, client, duration, conns))
	}
	rss, err := readRSS(app.cmd.Process.Pid)
	if err != nil {
		return err
	}
	counts, err := sandboxCounts(app.base)
	if err != nil {
		return err
	}

	hello, err := startHello(work)
	if err != nil {
		return err
	}
	defer hello.stop()
	fmt.Fprintf(os.Stderr, "running the hello-world ceiling\n")
	ceiling := drive(scenario{name: "hello-world net/http (ceiling)", request: getRequest(hello.base + "/")}, newClient(conns), duration, conns)

	report(os.Stdout, results, ceiling, rss, counts, duration, conns, logLevel)
	return nil
}

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

func getRequest(url string, headers ...string) func() (*http.Request, error) {
	return func() (*http.Request, error) {
		req, err := http.NewRequest(http.MethodGet, url, nil)
		if err != nil {
			return nil, err
		}
		for i := 0; i+1 < len(headers); i += 2 {
			req.Header.Set(headers[i], headers[i+1])
		}
		return req, nil
	}
}

func applianceScenarios(base, session string) []scenario {
	cookie := "wxappliance_session=" + session
	return []scenario{
		{name: "GET /auth/user/openid (cookie)", request: getRequest(base+"/auth/user/openid", "Cookie", cookie)},
		{name: "POST /offiaccount/jssdk", request: func() (*http.Request, error) {
			return http.NewRequest(http.MethodPost, base+"/offiaccount/jssdk",
				strings.NewReader(`{"url":"http://127.0.0.1/page?x=1"}`))
		}},
		{name: "GET /offiaccount/media (64 KiB)", request: getRequest(base + "/offiaccount/media?media_id=sandbox-64k")},
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

// proc is a server process the run started.
type proc struct {
	cmd  *exec.Cmd
	base string
}

func (p *proc) stop() {
	p.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
	}
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func startAppliance(bin, work, logLevel string) (*proc, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	config := filepath.Join(work, "config.toml")
	body := fmt.Sprintf(`[server]
listen = %q
admin_listen = ""
log_level = %q
[storage]
dir = %q
[wechat]
sandbox = true
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
`, addr, logLevel, filepath.Join(work, "data"), rpcKey)
	if err := os.WriteFile(config, []byte(body), 0o600); err != nil {
		return nil, err
	}
	logFile, err := os.Create(filepath.Join(work, "appliance.log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "serve", "-config", config)
	cmd.Stderr = logFile
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{cmd: cmd, base: "http://" + addr}
	return p, waitUp(p.base + "/readyz")
}

func startHello(work string) (*proc, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, "hello", addr)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{cmd: cmd, base: "http://" + addr}
	return p, waitUp(p.base + "/")
}

// serveHello is the ceiling: the smallest useful net/http server.
func serveHello(addr string) {
	srv := &http.Server{Addr: addr, ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"hello":"world"}`)
	})}
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func waitUp(url string) error {
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s did not answer 200 within 15s", url)
}

// rss is what /proc says of the appliance's memory at the end of the run:
// the high-water resident set and the current split between anonymous
// memory (Go heap, stacks) and file pages (Badger's memory-mapped files,
// which the kernel can drop under pressure).
type rss struct{ peak, anon, file int64 }

func readRSS(pid int) (rss, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return rss{}, err
	}
	var r rss
	for _, line := range strings.Split(string(data), "\n") {
		key, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		var kb int64
		fmt.Sscanf(strings.TrimSpace(val), "%d kB", &kb)
		switch key {
		case "VmHWM":
			r.peak = kb * 1024
		case "RssAnon":
			r.anon = kb * 1024
		case "RssFile":
			r.file = kb * 1024
		}
	}
	if r.peak == 0 {
		return rss{}, errors.New("no VmHWM in /proc status")
	}
	return r, nil
}

func report(w io.Writer, results []result, ceiling result, mem rss, counts map[string]int, duration time.Duration, conns int, logLevel string) {
	host, _ := os.Hostname()
	fmt.Fprintf(w, "Run: `go run ./bench/load -duration %v -conns %d` (appliance log_level %s, logs to a file), %s, %d CPUs, %s/%s, host %s, %s.\n\n",
		duration, conns, logLevel, runtime.Version(), runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, host, time.Now().UTC().Format("2006-01-02"))
	fmt.Fprintln(w, "| scenario | req/s | p50 | p99 | errors | vs ceiling |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|")
	for _, r := range append(results, ceiling) {
		fmt.Fprintf(w, "| %s | %.0f | %v | %v | %d | %.0f%% |\n", r.name, r.rate(),
			r.percentile(0.50).Round(time.Microsecond), r.percentile(0.99).Round(time.Microsecond),
			r.fails, 100*r.rate()/ceiling.rate())
	}
	const mib = 1 << 20
	fmt.Fprintf(w, "\nAppliance peak RSS (VmHWM): %.1f MiB; at the end %.1f MiB anonymous + %.1f MiB file-backed (mapped data files). Upstream fetches during the whole run: access_token %d, jsapi_ticket %d.\n",
		float64(mem.peak)/mib, float64(mem.anon)/mib, float64(mem.file)/mib,
		counts["cgi-bin/stable_token"]+counts["cgi-bin/token"], counts["cgi-bin/ticket/getticket"])
	for _, r := range append(results, ceiling) {
		if r.firstErr != nil {
			fmt.Fprintf(w, "\nFirst error in %s: %v\n", r.name, r.firstErr)
		}
	}
}
