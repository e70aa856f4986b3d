// Command wrk measures the appliance's browser routes with wrk against a
// hello-world net/http server on the same machine, in the same run:
//
//	go run ./bench/wrk -runs 3              # from the repository's root
//
// Each run builds nothing twice: the static binary (CGO_ENABLED=0) is built
// once, then every run starts it afresh in sandbox mode (log level info,
// logs to a file, a fresh data directory), logs a user in through /auth and
// the sandbox's authorize page, and runs `wrk -t2 -c64 -d10s --latency` on
// the hello world, GET /auth/user/openid (with the session cookie), POST
// /offiaccount/jssdk, GET /offiaccount/media?media_id=sandbox-64k and the
// hello world again. It prints one Markdown table per run with requests/s,
// latency percentiles and each route's share of the hello world (the mean
// of its two runs), and the appliance's peak RSS.
//
// With -profile DIR the appliance serves pprof on an admin listener and a
// CPU profile of each route is saved in DIR (route.pprof), plus the
// allocations over the whole run (allocs.pprof): read them with
// `go tool pprof -top DIR/openid.pprof`. Profiling costs throughput, so
// numbers from such a run are not comparable.
//
// wrk must be installed (Debian: apt-get install wrk).
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/100steps/wxappliance/appliance/sandbox"
	"github.com/100steps/wxappliance/bench/servers"
)

func main() {
	servers.ServeHelloIfAsked()
	var o options
	flag.DurationVar(&o.duration, "d", 10*time.Second, "wrk -d: how long each target runs")
	flag.IntVar(&o.conns, "c", 64, "wrk -c: connections")
	flag.IntVar(&o.threads, "t", 2, "wrk -t: threads")
	flag.IntVar(&o.runs, "runs", 1, "how many runs, each with fresh processes")
	flag.StringVar(&o.bin, "bin", "", "appliance binary (default: build it with CGO_ENABLED=0)")
	flag.StringVar(&o.logLevel, "log-level", "info", "the appliance's server.log_level (logs go to a file)")
	flag.StringVar(&o.profile, "profile", "", "save CPU profiles of each route and the run's allocations in this directory")
	flag.Float64Var(&o.quiet, "wait-load", 1, "before each run, wait (up to 10 minutes) for the 1-minute load average to drop below this; 0 does not wait")
	flag.Parse()
	if err := o.main(); err != nil {
		fmt.Fprintln(os.Stderr, "wrk:", err)
		os.Exit(1)
	}
}

type options struct {
	duration               time.Duration
	conns, threads, runs   int
	bin, logLevel, profile string
	quiet                  float64
}

func (o *options) main() error {
	if _, err := exec.LookPath("wrk"); err != nil {
		return fmt.Errorf("wrk is not installed (apt-get install wrk): %w", err)
	}
	work, err := os.MkdirTemp("", "wxappliance-wrk")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	if o.bin == "" {
		if o.bin, err = servers.Build(work); err != nil {
			return err
		}
	}
	if o.profile != "" {
		if err := os.MkdirAll(o.profile, 0o755); err != nil {
			return err
		}
	}
	host, _ := os.Hostname()
	fmt.Printf("Command: `go run ./bench/wrk -runs %d` (wrk -t%d -c%d -d%v --latency; appliance log_level %s, logs to a file). %s, %d CPUs, %s/%s, host %s, %s.\n",
		o.runs, o.threads, o.conns, o.duration, o.logLevel, runtime.Version(), runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, host, time.Now().UTC().Format(time.RFC3339))
	for i := range o.runs {
		dir := filepath.Join(work, fmt.Sprintf("run%d", i+1))
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		servers.WaitQuiet(o.quiet, 10*time.Minute)
		fmt.Printf("\nRun %d of %d, load average before it: %s\n\n", i+1, o.runs, servers.LoadAverage())
		if err := o.run(dir); err != nil {
			return err
		}
	}
	return nil
}

// target is one wrk run.
type target struct {
	name, url string
	args      []string // more wrk arguments: headers, a script
	profile   string   // the CPU profile's file name; empty for the hello world
}

func (o *options) run(dir string) error {
	admin := `admin_listen = ""`
	var adminAddr string
	if o.profile != "" {
		var err error
		if adminAddr, err = servers.FreeAddr(); err != nil {
			return err
		}
		admin = fmt.Sprintf("admin_listen = %q\npprof = true", adminAddr)
	}
	app, err := servers.Appliance(o.bin, filepath.Join(dir, "appliance"), `[server]
listen = "%[1]s"
`+admin+`
log_level = "`+o.logLevel+`"
[storage]
dir = "`+filepath.Join(dir, "data")+`"
[wechat]
sandbox = true
[oauth]
allowed_return_hosts = ["127.0.0.1"]
login_rate = 0
`)
	if err != nil {
		return err
	}
	defer app.Stop()
	hello, err := servers.Hello(dir)
	if err != nil {
		return err
	}
	defer hello.Stop()
	session, err := sandbox.Login(app.Base, sandbox.OpenIDZhangsan)
	if err != nil {
		return fmt.Errorf("login: %w", err)
	}
	post := filepath.Join(dir, "jssdk.lua")
	script := `wrk.method = "POST"
wrk.body = '{"url":"http://127.0.0.1/page?x=1"}'
wrk.headers["Content-Type"] = "application/json"
`
	if err := os.WriteFile(post, []byte(script), 0o600); err != nil {
		return err
	}
	routes := []target{
		{name: "GET /auth/user/openid (cookie)", url: app.Base + "/auth/user/openid",
			args: []string{"-H", "Cookie: wxappliance_session=" + session}, profile: "openid"},
		{name: "POST /offiaccount/jssdk", url: app.Base + "/offiaccount/jssdk", args: []string{"-s", post}, profile: "jssdk"},
		{name: "GET /offiaccount/media (64 KiB, base64)", url: app.Base + "/offiaccount/media?media_id=sandbox-64k", profile: "media"},
	}
	// One request each first, so the cold fetches of the token, the
	// ticket and the sandbox's file are not in the measurement.
	for _, t := range routes {
		if err := warm(t); err != nil {
			return err
		}
	}
	helloTarget := target{name: "hello-world net/http", url: hello.Base + "/"}
	var results []result
	first, err := o.wrk(helloTarget, "")
	if err != nil {
		return err
	}
	for _, t := range routes {
		r, err := o.wrk(t, adminAddr)
		if err != nil {
			return err
		}
		results = append(results, r)
	}
	mem, err := servers.ReadMemory(app.Pid())
	if err != nil {
		return err
	}
	last, err := o.wrk(helloTarget, "")
	if err != nil {
		return err
	}
	if adminAddr != "" {
		if err := save("http://"+adminAddr+"/debug/pprof/allocs", filepath.Join(o.profile, "allocs.pprof")); err != nil {
			return err
		}
	}
	ceiling := (first.rate + last.rate) / 2
	first.name += " (before)"
	last.name += " (after)"
	fmt.Println("| target | req/s | p50 | p99 | errors | vs hello-world |")
	fmt.Println("|---|---:|---:|---:|---:|---:|")
	for _, r := range append(append([]result{first}, results...), last) {
		fmt.Printf("| %s | %.0f | %s | %s | %d | %.1f%% |\n", r.name, r.rate, r.p50, r.p99, r.errors, 100*r.rate/ceiling)
	}
	fmt.Printf("\nAppliance peak RSS (VmHWM) after the routes: %s (now %s anonymous + %s file-backed).\n",
		servers.MiB(mem.Peak), servers.MiB(mem.Anon), servers.MiB(mem.File))
	return nil
}

// warm asks t once and wants 200.
func warm(t target) error {
	method := http.MethodGet
	var body io.Reader
	if t.profile == "jssdk" {
		method, body = http.MethodPost, strings.NewReader(`{"url":"http://127.0.0.1/page?x=1"}`)
	}
	req, err := http.NewRequest(method, t.url, body)
	if err != nil {
		return err
	}
	for i := 0; i+1 < len(t.args); i += 2 {
		if t.args[i] == "-H" {
			k, v, _ := strings.Cut(t.args[i+1], ": ")
			req.Header.Set(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: HTTP %d before the run", t.name, resp.StatusCode)
	}
	return nil
}

type result struct {
	name     string
	rate     float64
	p50, p99 string
	errors   int64
}

var (
	rateRe   = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	pctRe    = regexp.MustCompile(`(?m)^\s+(50|99)%\s+(\S+)`)
	non2xxRe = regexp.MustCompile(`Non-2xx or 3xx responses:\s+(\d+)`)
	sockRe   = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
)

// wrk runs wrk on t, taking a CPU profile from the admin listener at
// adminAddr meanwhile when there is one and t names a profile.
func (o *options) wrk(t target, adminAddr string) (result, error) {
	fmt.Fprintf(os.Stderr, "wrk %s for %v\n", t.name, o.duration)
	args := append([]string{"-t", strconv.Itoa(o.threads), "-c", strconv.Itoa(o.conns), "-d", o.duration.String(), "--latency"}, t.args...)
	cmd := exec.Command("wrk", append(args, t.url)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, os.Stderr
	profiled := make(chan error, 1)
	if adminAddr != "" && t.profile != "" {
		secs := max(int(o.duration.Seconds())-2, 1)
		go func() {
			time.Sleep(time.Second)
			profiled <- save(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", adminAddr, secs), filepath.Join(o.profile, t.profile+".pprof"))
		}()
	} else {
		profiled <- nil
	}
	if err := cmd.Run(); err != nil {
		return result{}, fmt.Errorf("wrk %s: %w: %s", t.name, err, out.String())
	}
	if err := <-profiled; err != nil {
		return result{}, err
	}
	return parse(t.name, out.String())
}

func parse(name, out string) (result, error) {
	r := result{name: name}
	m := rateRe.FindStringSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("wrk %s: no Requests/sec in its output: %s", name, out)
	}
	r.rate, _ = strconv.ParseFloat(m[1], 64)
	for _, m := range pctRe.FindAllStringSubmatch(out, -1) {
		if m[1] == "50" {
			r.p50 = m[2]
		} else {
			r.p99 = m[2]
		}
	}
	if m := non2xxRe.FindStringSubmatch(out); m != nil {
		n, _ := strconv.ParseInt(m[1], 10, 64)
		r.errors += n
	}
	if m := sockRe.FindStringSubmatch(out); m != nil {
		for _, s := range m[1:] {
			n, _ := strconv.ParseInt(s, 10, 64)
			r.errors += n
		}
	}
	return r, nil
}

// save writes what url answers to path.
func save(url, path string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: HTTP %d", url, resp.StatusCode)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
