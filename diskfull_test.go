package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/100steps/wxappliance/appliance/poll"
	"github.com/100steps/wxappliance/kv"
	"github.com/100steps/wxappliance/kv/disktest"
)

// readyz returns the status of /readyz and its store check.
func (p *process) readyz(t *testing.T) (int, string) {
	t.Helper()
	resp, err := http.Get(p.base + "/readyz")
	if err != nil {
		t.Fatalf("readyz: %v\n%s", err, p.stderr)
	}
	defer resp.Body.Close()
	var body struct {
		Checks map[string]string `json:"checks"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("readyz body: %v", err)
	}
	return resp.StatusCode, body.Checks["store"]
}

// waitStore polls /readyz until the store check starts with prefix. The
// appliance looks at the disk every second.
func (p *process) waitStore(t *testing.T, prefix string) {
	t.Helper()
	poll.Until(t, fmt.Sprintf("readyz's store check to start with %q", prefix), func() bool {
		_, store := p.readyz(t)
		return strings.HasPrefix(store, prefix)
	})
}

// alive fails the test if the process has exited.
func (p *process) alive(t *testing.T) {
	t.Helper()
	select {
	case err := <-p.done:
		p.done <- err
		t.Fatalf("the appliance died: %v\n%s", err, p.stderr)
	default:
	}
}

// stop sends sig and waits for the process to exit.
func (p *process) stop(t *testing.T, sig os.Signal) error {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	err := <-p.done
	p.done <- nil
	return err
}

// authWrite makes the anonymous write every visitor can make: GET /auth
// stores a login record before redirecting to WeChat. It returns the
// status and, for an error, the envelope's msg.
func authWrite(t *testing.T, base string) (int, string) {
	t.Helper()
	c := &http.Client{
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := c.Get(base + "/auth?state=" + url.QueryEscape(base+"/sandbox/demo"))
	if err != nil {
		t.Fatalf("GET /auth: %v", err)
	}
	defer resp.Body.Close()
	var env struct {
		Msg string `json:"msg"`
	}
	json.NewDecoder(resp.Body).Decode(&env)
	return resp.StatusCode, env.Msg
}

// TestDiskFull runs the appliance with storage.dir on a small tmpfs and
// takes the disk below the floor (storage.min_free, 64 MiB by default)
// under it: writes are refused with 503, reads go on, /readyz says why,
// the process lives, writes resume when space returns, and it starts, after
// a crash or a clean stop, on the full disk.
func TestDiskFull(t *testing.T) {
	if testing.Short() {
		t.Skip("fills a tmpfs under the binary")
	}
	mnt := disktest.MountTmpfs(t, 128<<20)
	dir := filepath.Join(mnt, "data")
	addr := freePort(t)
	config := writeSandboxConfig(t, addr, dir)
	p := start(t, config, addr)
	session, err := login(p.base, "oSBX_xiaoming")
	if err != nil {
		t.Fatalf("login: %v\n%s", err, p.stderr)
	}
	p.waitStore(t, "ok")
	if status, _ := authWrite(t, p.base); status != http.StatusFound {
		t.Fatalf("GET /auth with space = %d", status)
	}

	// Below the floor, by 8 MiB.
	filler := disktest.Fill(t, mnt, kv.DefaultMinFree-8<<20)
	p.waitStore(t, "disk full: ")
	checkFull := func(p *process) {
		t.Helper()
		status, store := p.readyz(t)
		if status != http.StatusServiceUnavailable || !strings.HasSuffix(store, "free (storage.min_free is 64 MiB)") {
			t.Errorf("readyz on a full disk = %d %q", status, store)
		}
		mustOpenID(t, p.base, session, "oSBX_xiaoming")
		// The lead maps kv.ErrNoSpace to this answer in the error table.
		if status, msg := authWrite(t, p.base); status != http.StatusServiceUnavailable || msg != "存储空间不足" {
			t.Errorf("GET /auth on a full disk = %d %q, want 503 %q", status, msg, "存储空间不足")
		}
		p.alive(t)
	}
	checkFull(p)

	// Space returns: writes resume, no restart.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	p.waitStore(t, "ok")
	if _, err := login(p.base, "oSBX_zhangsan"); err != nil {
		t.Fatalf("login after space returned: %v\n%s", err, p.stderr)
	}

	// Full again, and the appliance is killed: it starts again on the full
	// disk, replaying its write-ahead log, and serves reads.
	filler = disktest.Fill(t, mnt, kv.DefaultMinFree-8<<20)
	p.waitStore(t, "disk full: ")
	p.stop(t, syscall.SIGKILL)
	p = start(t, config, addr)
	p.waitStore(t, "disk full: ")
	checkFull(p)

	// Stopped cleanly on the full disk: it starts again, read-only.
	if err := p.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM on a full disk: %v\n%s", err, p.stderr)
	}
	p = start(t, config, addr)
	p.waitStore(t, "disk full: ")
	checkFull(p)
	if !strings.Contains(p.stderr.String(), "opened read-only") {
		t.Errorf("no word of the read-only open in the log:\n%s", p.stderr)
	}

	// And it reopens for writes by itself when space returns.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	p.waitStore(t, "ok")
	if _, err := login(p.base, "oSBX_ahua"); err != nil {
		t.Fatalf("login after space returned: %v\n%s", err, p.stderr)
	}
	mustOpenID(t, p.base, session, "oSBX_xiaoming")
	log := p.stderr.String()
	for _, want := range []string{"below storage.min_free", "back above storage.min_free"} {
		if !strings.Contains(log, want) {
			t.Errorf("the log does not say %q:\n%s", want, log)
		}
	}
}
