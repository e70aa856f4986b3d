package main

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The menu command applies the config's menu through the running
// appliance (the sandbox lives inside it), and the sandbox's push page
// shows it and pushes its CLICK events.
func TestMenuCommand(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	addr, admin := freePort(t), freePort(t)
	config := writeSandboxConfig(t, addr, dir, configLines{server: []string{fmt.Sprintf("admin_listen = %q", admin)}})
	appendMenu(t, config, `[[menu.button]]
type = "click"
name = "今日歌曲"
key = "V1001_TODAY_MUSIC"
[[menu.button]]
name = "更多"
[[menu.button.sub_button]]
type = "view"
name = "搜索"
url = "https://example.com/?a=1&b=2"
`)
	p := start(t, config, addr)
	run := func(args ...string) string {
		t.Helper()
		out, err := execOutput(binary(t), append([]string{"menu"}, args...)...)
		if err != nil {
			t.Fatalf("menu %v: %v\n%s", args, err, out)
		}
		return out
	}
	if out := run("show", "-config", config); !strings.Contains(out, "no custom menu") {
		t.Fatalf("show before apply: %s", out)
	}
	if out := run("apply", "-config", config); !strings.Contains(out, "menu applied: 2 buttons") {
		t.Fatalf("apply: %s", out)
	}
	if out := run("show", "-config", config); !strings.Contains(out, "今日歌曲") || !strings.Contains(out, "https://example.com/?a=1&b=2") {
		t.Fatalf("show after apply: %s", out)
	}

	page := httpGet(t, p.base+"/sandbox/push")
	if !strings.Contains(page, `value="CLICK:V1001_TODAY_MUSIC"`) || !strings.Contains(page, "搜索") {
		t.Fatalf("the push page does not show the menu:\n%s", page)
	}
	resp, err := http.PostForm(p.base+"/sandbox/push", url.Values{
		"openid": {"oSBX_zhangsan"}, "kind": {"text"}, "mode": {"safe"}, "menu": {"CLICK:V1001_TODAY_MUSIC"},
	})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "CLICK") || !strings.Contains(string(body), "V1001_TODAY_MUSIC") {
		t.Fatalf("tapping the menu button: %d\n%s", resp.StatusCode, body)
	}

	if out := run("delete", "-config", config); !strings.Contains(out, "menu deleted") {
		t.Fatalf("delete: %s", out)
	}
	if out := run("show", "-config", config); !strings.Contains(out, "no custom menu") {
		t.Fatalf("show after delete: %s", out)
	}
}

// A menu WeChat would refuse is refused by check-config, each problem with
// its key.
func TestMenuInConfigIsValidated(t *testing.T) {
	config := writeSandboxConfig(t, freePort(t), t.TempDir())
	appendMenu(t, config, `[[menu.button]]
type = "click"
name = "一二三四五六"
`)
	out, err := execOutput(binary(t), "check-config", "-config", config)
	if err == nil || !strings.Contains(out, "menu.button[0].name") || !strings.Contains(out, "menu.button[0].key") {
		t.Fatalf("check-config: %v\n%s", err, out)
	}
}

func appendMenu(t *testing.T, config, menu string) {
	t.Helper()
	f, err := os.OpenFile(config, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(menu); err != nil {
		t.Fatal(err)
	}
}

func httpGet(t *testing.T, u string) string {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
