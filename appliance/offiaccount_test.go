package appliance_test

import (
	"bytes"
	"encoding/base64"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/100steps/wxappliance/appliance"
	"github.com/100steps/wxappliance/appliance/poll"
	"github.com/100steps/wxappliance/appliance/sandbox"
	"github.com/100steps/wxappliance/jssdk"
)

func TestOffiaccountUser(t *testing.T) {
	h := newHarness(t)
	if st, _ := h.browser().get("/offiaccount/user").envelope(t); st != 401 {
		t.Fatalf("logged out: %d", st)
	}
	b := h.browser()
	b.mustLogin(sandbox.OpenIDZhangsan)
	info := b.get("/offiaccount/user").json(t)
	// WeChat's answer as it is: since 2021 without nickname or avatar.
	if info["subscribe"] != float64(1) || info["openid"] != sandbox.OpenIDZhangsan || info["remark"] != "测试备注" || info["nickname"] != nil {
		t.Fatalf("user info %v", info)
	}
	for _, k := range []string{"subscribe_time", "subscribe_scene", "tagid_list", "qr_scene", "groupid", "remark"} {
		if _, ok := info[k]; !ok {
			t.Errorf("missing %q", k)
		}
	}

	lisi := h.browser()
	lisi.mustLogin(sandbox.OpenIDLisi)
	if st, msg := lisi.get("/offiaccount/user").envelope(t); st != 403 || msg != "请先关注公众号" {
		t.Fatalf("unsubscribed: %d %q", st, msg)
	}
}

func TestJSSDKRoute(t *testing.T) {
	h := newHarness(t)
	const page = "https://app.example.com/a?b=1&c=%E4%B8%AD"
	check := func(t *testing.T, resp *response, want string) {
		t.Helper()
		if resp.StatusCode != 200 {
			t.Fatalf("%d %s", resp.StatusCode, resp.body)
		}
		m := resp.json(t)
		for _, k := range []string{"appid", "timestamp", "noncestr", "signature"} {
			if _, ok := m[k]; !ok {
				t.Fatalf("missing %q in %s", k, resp.body)
			}
		}
		if len(m) != 4 {
			t.Fatalf("extra fields (the ticket must never leave): %s", resp.body)
		}
		ts, ok := m["timestamp"].(float64)
		if !ok || ts != float64(int64(ts)) || int64(ts) > time.Now().Unix() || int64(ts) < time.Now().Unix()-5 {
			t.Fatalf("timestamp %v", m["timestamp"])
		}
		if len(m["noncestr"].(string)) < 16 || m["appid"] != h.sb.AppID() {
			t.Fatalf("noncestr/appid %v", m)
		}
		ticket := currentTicket(t, h)
		if sig := jssdk.Sign(ticket, m["noncestr"].(string), int64(ts), want); sig != m["signature"] {
			t.Fatalf("signature %v, want %s", m["signature"], sig)
		}
	}
	b := h.browser()
	t.Run("json without content-type", func(t *testing.T) {
		check(t, b.post("/offiaccount/jssdk", "", `{"url":"`+page+`"}`), page)
	})
	t.Run("json as text/plain", func(t *testing.T) {
		check(t, b.post("/offiaccount/jssdk", "text/plain;charset=UTF-8", `{"url":"`+page+`#/x"}`), page)
	})
	t.Run("form", func(t *testing.T) {
		check(t, b.post("/offiaccount/jssdk", "application/x-www-form-urlencoded", "url="+url.QueryEscape(page)), page)
	})
	t.Run("query", func(t *testing.T) {
		check(t, b.post("/offiaccount/jssdk?url="+url.QueryEscape(page), "", ""), page)
	})
	bad := []struct{ name, body string }{
		{"empty", ""},
		{"no url", `{"href":"x"}`},
		{"empty url", `{"url":""}`},
		{"not json", `{"url":`},
		{"number", `{"url":5}`},
		{"relative", `{"url":"/page"}`},
		{"javascript", `{"url":"javascript:alert(1)"}`},
		{"foreign host", `{"url":"https://evil.com/page"}`},
	}
	for _, tt := range bad {
		t.Run("bad "+tt.name, func(t *testing.T) {
			if st, _ := b.post("/offiaccount/jssdk", "application/json", tt.body).envelope(t); st != 400 {
				t.Fatalf("status %d", st)
			}
		})
	}
	t.Run("body cap", func(t *testing.T) {
		big := `{"url":"https://app.example.com/` + strings.Repeat("a", 2<<20) + `"}`
		if st, _ := b.post("/offiaccount/jssdk", "application/json", big).envelope(t); st != 413 {
			t.Fatalf("status %d", st)
		}
	})
}

func currentTicket(t *testing.T, h *harness) string {
	t.Helper()
	tok, err := h.app.App().Token(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(h.up.URL + "/cgi-bin/ticket/getticket?type=jsapi&access_token=" + url.QueryEscape(tok.Value))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	const key = `"ticket":"`
	i := bytes.Index(body, []byte(key))
	if i < 0 {
		t.Fatalf("getticket: %s", body)
	}
	rest := body[i+len(key):]
	return string(rest[:bytes.IndexByte(rest, '"')])
}

func TestMediaRoutes(t *testing.T) {
	h := newHarness(t, func(c *appliance.Config) { c.Media.MaxBytes = 1 << 20 })
	b := h.browser()
	raw := func(id string) []byte {
		resp, err := http.Get(h.up.URL + "/cgi-bin/media/get?media_id=" + id + "&access_token=" + url.QueryEscape(mustToken(t, h)))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		return data
	}
	for _, m := range []struct{ id, ct string }{
		{sandbox.MediaImage, "image/jpeg"},
		{sandbox.MediaVoice, "audio/amr"},
		{sandbox.Media64K, "image/jpeg"},
	} {
		t.Run(m.id, func(t *testing.T) {
			got := b.get("/offiaccount/media?media_id=" + m.id).json(t)
			if got["content_type"] != m.ct {
				t.Fatalf("content_type %v", got["content_type"])
			}
			data, err := base64.StdEncoding.DecodeString(got["media_data"].(string))
			if err != nil || !bytes.Equal(data, raw(m.id)) {
				t.Fatalf("media_data does not decode to the file (%v)", err)
			}
			rawResp := b.get("/offiaccount/media/raw?media_id=" + m.id)
			if rawResp.StatusCode != 200 || rawResp.Header.Get("Content-Type") != m.ct || !bytes.Equal(rawResp.body, data) {
				t.Fatalf("raw: %d %q %d bytes", rawResp.StatusCode, rawResp.Header.Get("Content-Type"), len(rawResp.body))
			}
			if rawResp.Header.Get("X-Content-Type-Options") != "nosniff" {
				t.Fatal("raw media without nosniff")
			}
		})
	}
	t.Run("video", func(t *testing.T) {
		for _, path := range []string{"/offiaccount/media", "/offiaccount/media/raw"} {
			got := b.get(path + "?media_id=" + sandbox.MediaVideo).json(t)
			if u, _ := got["video_url"].(string); !strings.HasSuffix(u, ".mp4") || got["media_data"] != nil {
				t.Fatalf("%s video: %v", path, got)
			}
		}
	})
	t.Run("invalid id", func(t *testing.T) {
		for _, path := range []string{"/offiaccount/media", "/offiaccount/media/raw"} {
			if st, msg := b.get(path + "?media_id=nope").envelope(t); st != 400 || msg != "media_id无效" {
				t.Fatalf("%s: %d %q", path, st, msg)
			}
			if st, _ := b.get(path).envelope(t); st != 400 {
				t.Fatalf("%s without id: %d", path, st)
			}
			if st, _ := b.get(path + "?media_id=" + url.QueryEscape("a b\n")).envelope(t); st != 400 {
				t.Fatalf("%s with junk id: %d", path, st)
			}
		}
	})
	t.Run("over the cap", func(t *testing.T) {
		for _, path := range []string{"/offiaccount/media", "/offiaccount/media/raw"} {
			if st, _ := b.get(path + "?media_id=" + sandbox.MediaBig).envelope(t); st != 413 {
				t.Fatalf("%s: %d", path, st)
			}
		}
	})
}

func mustToken(t *testing.T, h *harness) string {
	t.Helper()
	tok, err := h.app.App().Token(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return tok.Value
}

func TestUpstreamFailures(t *testing.T) {
	tests := []struct {
		name   string
		fault  sandbox.Fault
		status int
		msg    string
	}{
		{"hang", sandbox.Fault{Hang: true}, 504, "微信服务器超时"},
		{"busy twice", sandbox.Fault{Errcode: -1}, 504, "微信服务器超时"},
		{"5xx", sandbox.Fault{Status: 502}, 504, ""},
		{"malformed", sandbox.Fault{Malformed: true}, 504, ""},
		{"quota", sandbox.Fault{Errcode: 45009}, 500, ""},
		{"other errcode", sandbox.Fault{Errcode: 40013}, 500, "微信接口返回错误"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, func(c *appliance.Config) { c.WeChat.Timeout = appliance.Duration(faultTimeout) })
			b := h.browser()
			b.mustLogin(sandbox.OpenIDZhangsan)
			h.sb.SetFault("cgi-bin/user/info", tt.fault)
			start := time.Now()
			resp := b.get("/offiaccount/user")
			elapsed := time.Since(start)
			st, msg := resp.envelope(t)
			if st != tt.status || (tt.msg != "" && msg != tt.msg) {
				t.Fatalf("%d %q, want %d %q", st, msg, tt.status, tt.msg)
			}
			if elapsed > faultAnswerBound {
				t.Fatalf("answered after %v: the deadline did not cut it", elapsed)
			}
			if strings.Contains(string(resp.body), "errcode") || strings.Contains(string(resp.body), "45009") {
				t.Fatalf("raw WeChat error reached the browser: %s", resp.body)
			}
			h.sb.ClearFaults()
			poll.Until(t, "a request to succeed after recovery", func() bool {
				return b.get("/offiaccount/user").StatusCode == 200
			})
		})
	}
}

func TestBusyRetriedOnce(t *testing.T) {
	h := newHarness(t)
	b := h.browser()
	b.mustLogin(sandbox.OpenIDZhangsan)
	h.sb.SetFault("cgi-bin/user/info", sandbox.Fault{Errcode: -1, Times: 1})
	if resp := b.get("/offiaccount/user"); resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, resp.body)
	}
	if n := h.sb.Count("cgi-bin/user/info"); n != 2 {
		t.Fatalf("%d calls, want 2", n)
	}
}
