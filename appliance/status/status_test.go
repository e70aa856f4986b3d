package status

import (
	"errors"
	"fmt"
	"io"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/100steps/wxappliance/callback"
	"github.com/100steps/wxappliance/oauth"
	"github.com/100steps/wxappliance/rpc"
)

func TestHint(t *testing.T) {
	tests := []struct {
		name          string
		e             fetchError
		wantIP        string
		wantHintWords string
	}{
		{"40164 with WeChat's text", fetchError{"40164", "invalid ip 1.2.3.4 ipv6 ::ffff:1.2.3.4, not in whitelist rid: 6523a1f0-1b2c"}, "1.2.3.4", "IP白名单"},
		{"40164 from IPv6", fetchError{"40164", "invalid ip 2001:db8::7, not in whitelist"}, "2001:db8::7", "IP白名单"},
		{"40164 without an IP", fetchError{"40164", "not in whitelist"}, "", "IP白名单"},
		{"secret", fetchError{"40125", "invalid appsecret"}, "", "wechat.app_secret"},
		{"appid", fetchError{"40013", "invalid appid"}, "", "wechat.app_id"},
		{"network", fetchError{"timeout", ""}, "", "outbound network"},
		{"unknown", fetchError{"99999", "something"}, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			text, ip := hint(tt.e)
			if ip != tt.wantIP {
				t.Fatalf("ip %q, want %q", ip, tt.wantIP)
			}
			if tt.wantHintWords == "" && text != "" || !strings.Contains(text, tt.wantHintWords) {
				t.Fatalf("hint %q, want one saying %q", text, tt.wantHintWords)
			}
		})
	}
}

func TestRingKeepsTheLast(t *testing.T) {
	r := newRing[int](3)
	if got := r.newestFirst(); len(got) != 0 {
		t.Fatalf("empty ring: %v", got)
	}
	for i := range 2 {
		r.add(i)
	}
	if got := fmt.Sprint(r.newestFirst()); got != "[1 0]" {
		t.Fatalf("partly filled: %s", got)
	}
	for i := 2; i < 8; i++ {
		r.add(i)
	}
	if got := fmt.Sprint(r.newestFirst()); got != "[7 6 5]" || len(r.items) != 3 {
		t.Fatalf("after 8 adds: %s (%d kept)", got, len(r.items))
	}
}

func TestClip(t *testing.T) {
	long := strings.Repeat("微", maxText) // 3 bytes each
	got := clip(long)
	if len(got) > maxText+len("…") || !strings.HasSuffix(got, "…") || !strings.HasPrefix(got, "微微") || strings.ContainsRune(got, '\uFFFD') {
		t.Fatalf("clip cut %d bytes into %q", len(long), got[len(got)-10:])
	}
	if clip("short") != "short" {
		t.Fatal("clip changed a short text")
	}
}

func render(t *testing.T, s *Status) string {
	t.Helper()
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Code != 200 || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/html") {
		t.Fatalf("status page: %d %s", rec.Code, rec.Header().Get("Content-Type"))
	}
	body, _ := io.ReadAll(rec.Body)
	return string(body)
}

// The page shows times and outcomes, never a token, a push's content or a
// sender, and escapes what came from outside.
func TestPageShowsNoSecrets(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	s := New("v9", func() time.Time { return now })
	tok := oauth.Token{Value: "TOKEN-VALUE-must-not-show", ExpiresAt: now.Add(time.Hour), RefreshAt: now.Add(-time.Minute), FetchedAt: now.Add(-time.Hour)}
	s.SetSources(Sources{
		AppID:       "wx0123",
		Credentials: []Credential{{Name: "access_token", API: "cgi-bin/stable_token", Peek: func() (oauth.Token, bool) { return tok, true }}},
		Callback:    true,
		RPC: func() []rpc.Connection {
			return []rpc.Connection{{Key: "flask", Remote: "127.0.0.1:5000", Since: now.Add(-time.Minute), Subscribed: true}}
		},
		Storage: Storage{Backend: "badger", Dir: "/var/lib/wx", Size: func() (int64, int64) { return 1 << 20, 2 << 20 }},
	})
	s.CredentialFetched(oauth.Fetched{Credential: "access_token", At: now.Add(-time.Minute),
		Err: fmt.Errorf("fetch: %w", &oauth.APIError{Code: 40164, Msg: "invalid ip 1.2.3.4 ipv6 ::ffff:1.2.3.4, not in whitelist"})})
	s.CallbackMessage(callback.Observation{MsgType: "event", Event: "<script>alert(1)</script>", Mode: "safe", Outcome: callback.OutcomeEmpty})
	s.CallbackMessage(callback.Observation{Outcome: callback.OutcomeRefused, Err: fmt.Errorf("%w: quoted <b>garbage</b>", callback.ErrMalformed)})
	s.WeChatCall("cgi-bin/user/info", "45009", time.Millisecond)
	s.WeChatCall("cgi-bin/user/info", "0", time.Millisecond)
	s.StorageError("put")

	page := render(t, s)
	for _, absent := range []string{"TOKEN-VALUE-must-not-show", "<script>alert", "<b>garbage"} {
		if strings.Contains(page, absent) {
			t.Errorf("the page contains %q", absent)
		}
	}
	for _, present := range []string{
		`id="access_token-left" class="warn">1h 0m`, // past RefreshAt: overdue
		`id="access_token-age">1h 0m`,
		`id="access_token-errcode">40164`,
		`id="access_token-ip">1.2.3.4`,
		"基本配置 → IP白名单",
		"&lt;script&gt;",
		"(malformed)",
		"<code>flask</code>",
		"<code>45009</code>",
		`id="storage-size">3.0 MiB`,
		"put: 1",
		`id="health">Needs attention`,
	} {
		if !strings.Contains(page, present) {
			t.Errorf("the page lacks %q", present)
		}
	}
	if t.Failed() {
		t.Log(page)
	}
}

func TestRefusalNamesOnlyTheKind(t *testing.T) {
	if got := refusal(fmt.Errorf("%w: <xml>user text</xml>", callback.ErrMalformed)); got != "malformed" {
		t.Fatalf("refusal = %q", got)
	}
	if got := refusal(errors.New("anything else")); got != "invalid request" {
		t.Fatalf("refusal = %q", got)
	}
}

func TestHuman(t *testing.T) {
	for d, want := range map[time.Duration]string{
		12 * time.Second:               "12s",
		4*time.Minute + 10*time.Second: "4m 10s",
		time.Hour + 52*time.Minute:     "1h 52m",
		75 * time.Hour:                 "3d 3h",
		-90 * time.Second:              "-1m 30s",
		1500 * time.Millisecond:        "2s",
	} {
		if got := human(d); got != want {
			t.Errorf("human(%v) = %q, want %q", d, got, want)
		}
	}
}

// Whatever WeChat writes in a 40164's errmsg, the page shows a real IP
// address or none.
func FuzzHint(f *testing.F) {
	f.Add("invalid ip 1.2.3.4 ipv6 ::ffff:1.2.3.4, not in whitelist rid: 6523a1f0-1b2c")
	f.Add("invalid ip 2001:db8::7, not in whitelist")
	f.Add("invalid ip 999.1.1.1 ipv6 ::, not in whitelist")
	f.Add("invalid ip ::::::::::::::")
	f.Fuzz(func(t *testing.T, errmsg string) {
		text, ip := hint(fetchError{errcode: "40164", errmsg: errmsg})
		if text == "" {
			t.Fatal("no hint for 40164")
		}
		if ip == "" {
			return
		}
		addr, err := netip.ParseAddr(ip)
		if err != nil || addr.String() != ip {
			t.Fatalf("ip %q from %q is not an address", ip, errmsg)
		}
	})
}
