package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/100steps/wxappliance/appliance/logtest"
	"github.com/100steps/wxappliance/appliance/poll"
	"github.com/100steps/wxappliance/appliance/sandbox"
)

// These tests run the real static binary, as ops would.

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "wxappliance-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "wxappliance")
		cmd := exec.Command("go", "build", "-o", binPath, ".")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// configLines are lines added to a sandbox config: to [server], to
// [oauth], and at the end (whole sections).
type configLines struct{ server, oauth, tail []string }

// writeSandboxConfig writes a sandbox config for addr and dir, with extra
// lines. The admin listener is off unless they set it, so that tests
// running side by side do not fight over its port.
func writeSandboxConfig(t *testing.T, addr, dir string, extra ...configLines) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.toml")
	var server, oauth, tail []string
	for _, e := range extra {
		server, oauth, tail = append(server, e.server...), append(oauth, e.oauth...), append(tail, e.tail...)
	}
	if !strings.Contains(strings.Join(server, "\n"), "admin_listen") {
		server = append(server, `admin_listen = ""`)
	}
	cfg := fmt.Sprintf(`[server]
listen = %q
log_level = "warn"
shutdown_timeout = "3s"
`+strings.Join(server, "\n")+`
[storage]
dir = %q
[wechat]
sandbox = true
[oauth]
allowed_return_hosts = ["127.0.0.1"]
`+strings.Join(oauth, "\n")+"\n"+strings.Join(tail, "\n")+"\n", addr, dir)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

type process struct {
	cmd    *exec.Cmd
	base   string
	stderr *logtest.Buffer
	done   chan error
}

// start runs the binary with config and waits until /healthz answers.
func start(t *testing.T, config, addr string) *process {
	t.Helper()
	return startBinary(t, "http://"+addr, "/healthz", "serve", "-config", config)
}

// startBinary runs the binary with args and waits until base+ready answers.
func startBinary(t *testing.T, base, ready string, args ...string) *process {
	t.Helper()
	p := launch(t, base, args...)
	p.waitReady(t, ready)
	return p
}

// launch starts the binary with args without waiting for it, so that
// several can start at once.
func launch(t *testing.T, base string, args ...string) *process {
	t.Helper()
	p := &process{base: base, stderr: &logtest.Buffer{}, done: make(chan error, 1)}
	p.cmd = exec.Command(binary(t), args...)
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("the binary's stderr:\n%s", p.stderr)
		}
	})
	return p
}

// waitReady polls base+path until it answers, or fails when the process
// exits first.
func (p *process) waitReady(t *testing.T, path string) {
	t.Helper()
	poll.Until(t, "the binary to answer "+path, func() bool {
		select {
		case err := <-p.done:
			t.Fatalf("binary exited: %v\n%s", err, p.stderr)
		default:
		}
		resp, err := http.Get(p.base + path)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	})
}

// kill kills the process unless it has exited, and waits for it. done
// holds Wait's result, put back for the next reader: reading ProcessState
// instead would race with Wait.
func (p *process) kill() {
	p.cmd.Process.Kill() // an error when it has exited already
	p.done <- <-p.done
}

// counts returns the call counts of this process's sandbox.
func (p *process) counts(t *testing.T) map[string]int {
	t.Helper()
	n, err := sandbox.Counts(p.base + "/sandbox")
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// login logs a new browser in as openid; the process may be dying.
func login(base, openid string) (string, error) { return sandbox.Login(base, openid) }

// openidOf asks the process who the session belongs to.
func openidOf(base, session string) (string, int, error) {
	req, _ := http.NewRequest(http.MethodGet, base+"/auth/user/openid", nil)
	req.AddCookie(&http.Cookie{Name: "wxappliance_session", Value: session})
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	var out struct {
		OpenID string `json:"openid"`
	}
	json.NewDecoder(resp.Body).Decode(&out)
	return out.OpenID, resp.StatusCode, nil
}

func mustOpenID(t *testing.T, base, session, want string) {
	t.Helper()
	got, status, err := openidOf(base, session)
	if err != nil || status != 200 || got != want {
		t.Fatalf("session: %q %d %v, want %q", got, status, err, want)
	}
}

// execOutput runs the binary to completion and returns stdout and stderr.
func execOutput(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}
