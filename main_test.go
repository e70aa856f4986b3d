package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func run(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	m := &Main{Stdout: &out, Stderr: &errOut, Getenv: func(string) string { return "" }}
	err := m.Run(context.Background(), args)
	return out.String(), errOut.String(), err
}

func TestVersion(t *testing.T) {
	out, _, err := run(t, "version")
	if err != nil || !strings.HasPrefix(out, "wxappliance ") {
		t.Fatalf("%q %v", out, err)
	}
}

func TestCheckConfig(t *testing.T) {
	out, _, err := run(t, "check-config", "-config", "config.example.toml")
	if err != nil || !strings.Contains(out, "ok") || !strings.Contains(out, "sandbox") {
		t.Fatalf("example config: %q %v", out, err)
	}
	bad := filepath.Join(t.TempDir(), "bad.toml")
	os.WriteFile(bad, []byte("[wechat]\nsandbox = true\napp_secert = \"x\"\n"), 0o600)
	if _, _, err := run(t, "check-config", "-config", bad); err == nil || !strings.Contains(err.Error(), "wechat.app_secert") {
		t.Fatalf("misspelt key: %v", err)
	}
	if _, _, err := run(t, "check-config", "-config", filepath.Join(t.TempDir(), "missing.toml")); err == nil {
		t.Fatal("missing file accepted")
	}
}

func TestServeRefusesBadConfig(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.toml")
	os.WriteFile(bad, []byte("[wechat]\ntimeout = \"-5s\"\n"), 0o600)
	_, _, err := run(t, "-config", bad)
	if err == nil || !strings.Contains(err.Error(), "wechat.timeout") || !strings.Contains(err.Error(), "wechat.app_id") {
		t.Fatalf("serve with a bad config: %v", err)
	}
}

func TestUnknownCommand(t *testing.T) {
	_, stderr, err := run(t, "frobnicate")
	if err == nil || !strings.Contains(stderr, "usage") {
		t.Fatalf("%v %q", err, stderr)
	}
}

// The sandbox command serves the fake WeChat alone until its context ends.
func TestSandboxCommand(t *testing.T) {
	config := filepath.Join(t.TempDir(), "config.toml")
	os.WriteFile(config, []byte(`[server]
base_url = "https://wx.example.com/prefix/"
[wechat]
app_id = "wxshared"
app_secret = "shared-secret"
[oauth]
allowed_return_hosts = ["example.com"]
[callback]
token = "tok123"
`), 0o600)
	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan string, 1)
	var stderr bytes.Buffer
	m := &Main{Stdout: io.Discard, Stderr: &stderr, Getenv: func(string) string { return "" },
		Started: func(a string) { addr <- a }}
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx, []string{"sandbox", "-listen", "127.0.0.1:0", "-config", config}) }()
	var base string
	select {
	case a := <-addr:
		base = "http://" + a
	case err := <-done:
		t.Fatalf("sandbox ended: %v\n%s", err, stderr.String())
	}

	token := func(secret string) map[string]any {
		resp, err := http.Post(base+"/cgi-bin/stable_token", "application/json",
			strings.NewReader(`{"grant_type":"client_credential","appid":"wxshared","secret":"`+secret+`"}`))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		json.NewDecoder(resp.Body).Decode(&out)
		return out
	}
	if out := token("shared-secret"); out["access_token"] == nil {
		t.Fatalf("the config's credentials: %v", out)
	}
	if out := token("sandbox-secret"); out["errcode"] == nil {
		t.Fatalf("other credentials accepted: %v", out)
	}
	resp, err := http.Get(base + "/push")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(page), "https://wx.example.com/prefix/callback") {
		t.Fatalf("push page does not target the config's callback:\n%s", page)
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("stop: %v", err)
	}
}

// Asking for help is not an error: every spelling prints the commands and
// exits 0, as does a command's -h.
func TestHelpAndVersion(t *testing.T) {
	for _, args := range [][]string{{"-h"}, {"--help"}, {"-help"}, {"help"}} {
		out, err := exec.Command(binary(t), args...).Output()
		if err != nil || !strings.Contains(string(out), "check-config") || !strings.Contains(string(out), "sandbox") {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	for _, args := range [][]string{{"serve", "-h"}, {"backup", "-h"}, {"sandbox", "-h"}} {
		out, err := exec.Command(binary(t), args...).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "-") {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	for _, args := range [][]string{{"version"}, {"--version"}, {"-version"}} {
		out, err := exec.Command(binary(t), args...).Output()
		if err != nil || !strings.HasPrefix(string(out), "wxappliance ") {
			t.Fatalf("%v: %v %q", args, err, out)
		}
	}
	if out, err := exec.Command(binary(t), "frobnicate").CombinedOutput(); err == nil || !strings.Contains(string(out), "unknown command") {
		t.Fatalf("unknown command: %v %s", err, out)
	}
}
