package main

import (
	"bytes"
	"context"
	"os"
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
