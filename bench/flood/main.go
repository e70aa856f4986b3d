// Command flood measures what an anonymous flood of GET /auth from one
// client costs the appliance's data directory, and whether another client
// still logs in meanwhile:
//
//	go run ./bench/flood -duration 60s -conns 8
//
// It builds the static binary, starts it in sandbox mode with the default
// login limits and a fresh data directory, floods /auth with 3 KiB return
// URLs from one address, logs a second client (another X-Forwarded-For
// address through the loopback proxy) in every few seconds, and prints the
// answers by status and the directory's growth.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/100steps/wxappliance/appliance/sandbox"
)

func main() {
	duration := flag.Duration("duration", 60*time.Second, "how long the flood lasts")
	conns := flag.Int("conns", 8, "concurrent flooding connections")
	flag.Parse()
	if err := run(*duration, *conns); err != nil {
		fmt.Fprintln(os.Stderr, "flood:", err)
		os.Exit(1)
	}
}

func run(duration time.Duration, conns int) error {
	work, err := os.MkdirTemp("", "wxappliance-flood")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	bin := filepath.Join(work, "wxappliance")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("build: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	addr := ln.Addr().String()
	ln.Close()
	dir := filepath.Join(work, "data")
	config := filepath.Join(work, "config.toml")
	os.WriteFile(config, fmt.Appendf(nil, "[server]\nlisten = %q\nadmin_listen = \"\"\n[storage]\ndir = %q\n[wechat]\nsandbox = true\n[oauth]\nallowed_return_hosts = [\"127.0.0.1\"]\n", addr, dir), 0o600)
	cmd := exec.Command(bin, "serve", "-config", config)
	if err := cmd.Start(); err != nil {
		return err
	}
	defer cmd.Process.Kill()
	base := "http://" + addr
	for range 100 {
		if resp, err := http.Get(base + "/healthz"); err == nil {
			resp.Body.Close()
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	before := dirSize(dir)

	ctx, cancel := context.WithTimeout(context.Background(), duration)
	defer cancel()
	var statuses sync.Map // status -> *atomic.Int64
	count := func(st int) {
		c, _ := statuses.LoadOrStore(st, new(atomic.Int64))
		c.(*atomic.Int64).Add(1)
	}
	state := url.QueryEscape(base + "/sandbox/demo?pad=" + strings.Repeat("x", 1900))
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	var wg sync.WaitGroup
	for range conns {
		wg.Go(func() {
			for ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/auth?state="+state, nil)
				resp, err := client.Do(req)
				if err != nil {
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				count(resp.StatusCode)
			}
		})
	}
	var logins, failed atomic.Int64
	wg.Go(func() {
		for ctx.Err() == nil {
			if _, err := loginAs(base, "203.0.113.5"); err != nil {
				failed.Add(1)
			} else {
				logins.Add(1)
			}
			select {
			case <-ctx.Done():
			case <-time.After(3 * time.Second):
			}
		}
	})
	wg.Wait()
	after := dirSize(dir)

	fmt.Printf("flood of GET /auth from one client for %v with %d connections:\n", duration, conns)
	statuses.Range(func(k, v any) bool {
		fmt.Printf("  %d: %d answers\n", k, v.(*atomic.Int64).Load())
		return true
	})
	fmt.Printf("  data directory: %.1f MiB before, %.1f MiB after (%+.1f MiB)\n", mib(before), mib(after), mib(after-before))
	fmt.Printf("  another client's logins meanwhile: %d succeeded, %d failed\n", logins.Load(), failed.Load())
	return nil
}

// loginAs logs a browser in as a sandbox user from client, an address the
// loopback proxy vouches for.
func loginAs(base, client string) (string, error) {
	tr := &xff{addr: client}
	return sandbox.LoginWith(&http.Client{Transport: tr, Timeout: 30 * time.Second}, base, sandbox.OpenIDZhangsan)
}

type xff struct{ addr string }

func (x *xff) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("X-Forwarded-For", x.addr)
	return http.DefaultTransport.RoundTrip(r)
}

// dirSize is the disk space dir's files take: blocks, not apparent sizes,
// since Badger's memory-mapped files are sparse.
func dirSize(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if info, err := d.Info(); err == nil {
			if st, ok := info.Sys().(*syscall.Stat_t); ok {
				n += st.Blocks * 512
			}
		}
		return nil
	})
	return n
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }
