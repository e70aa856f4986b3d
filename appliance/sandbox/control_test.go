package sandbox

import (
	"bytes"
	"encoding/json"
	"html"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestControl(t *testing.T) {
	e := newEnv(t)
	tok := e.appToken()
	e.userInfo(tok, OpenIDZhangsan)

	stats := e.get("_control/stats", nil)
	if string(stats.Body) != `{"counts":{"cgi-bin/token":1,"cgi-bin/user/info":1}}` {
		t.Fatalf("stats: %s", stats.Body)
	}

	a := e.post("_control/fault", nil, `{"endpoint":"cgi-bin/user/info","errcode":-1,"times":1}`)
	if a.Status != http.StatusOK {
		t.Fatalf("fault: %d %s", a.Status, a.Body)
	}
	wantErr(t, e.userInfo(tok, OpenIDZhangsan), -1)
	if code := e.userInfo(tok, OpenIDZhangsan).errcode(t); code != 0 {
		t.Fatalf("times did not apply: %d", code)
	}

	e.post("_control/fault", nil, `{"endpoint":"cgi-bin/user/info","status":502,"latency_ms":20}`)
	if a := e.userInfo(tok, OpenIDZhangsan); a.Status != http.StatusBadGateway {
		t.Fatalf("status fault: %d", a.Status)
	}
	e.post("_control/fault", nil, `{"endpoint":"cgi-bin/user/info","malformed":true}`)
	if a := e.userInfo(tok, OpenIDZhangsan); !bytes.HasPrefix(a.Body, []byte("{")) || bytes.HasSuffix(a.Body, []byte("}")) {
		t.Fatalf("malformed fault: %s", a.Body)
	}
	e.post("_control/clear", nil, "")
	if code := e.userInfo(tok, OpenIDZhangsan).errcode(t); code != 0 {
		t.Fatalf("after clear: %d", code)
	}

	e.post("_control/expire", nil, "")
	wantErr(t, e.userInfo(tok, OpenIDZhangsan), 42001)

	e.post("_control/reset", nil, "")
	if got := string(e.get("_control/stats", nil).Body); got != `{"counts":{}}` {
		t.Fatalf("after reset: %s", got)
	}

	for _, tc := range []struct {
		method, path, body string
		status             int
	}{
		{"POST", "_control/fault", `{"endpoint":"cgi-bin/nope"}`, 400},
		{"POST", "_control/fault", `{"endpoint":"cgi-bin/token","hangs":true}`, 400},
		{"POST", "_control/fault", `{"endpoint":"cgi-bin/token","status":42}`, 400},
		{"POST", "_control/fault", `{`, 400},
		{"GET", "_control/fault", "", 405},
		{"GET", "_control/expire", "", 405},
		{"POST", "_control/stats", "", 405},
		{"GET", "_control/nope", "", 404},
	} {
		if a := e.do(tc.method, tc.path, tc.body); a.Status != tc.status {
			t.Errorf("%s %s %s: status %d, want %d", tc.method, tc.path, tc.body, a.Status, tc.status)
		}
	}
	if n := len(e.sb.Counts()); n != 0 {
		t.Errorf("control requests were counted: %v", e.sb.Counts())
	}

	var users []User
	if err := json.Unmarshal(e.get("_control/users", nil).Body, &users); err != nil || len(users) < 4 {
		t.Fatalf("users: %v %v", users, err)
	}
}

func TestControlGlobalHang(t *testing.T) {
	e := newEnv(t)
	e.post("_control/fault", nil, `{"endpoint":"","hang":true}`)
	client := &http.Client{Timeout: 100 * time.Millisecond}
	if _, err := client.Get(e.srv.URL + "/cgi-bin/token"); err == nil {
		t.Fatal("hanging endpoint answered")
	}
	// Control still answers so the fault can be cleared.
	if a := e.post("_control/clear", nil, ""); a.Status != http.StatusOK {
		t.Fatalf("clear: %d", a.Status)
	}
	e.appToken()
}

// TestMounted runs the sandbox as the appliance mounts it, under /sandbox.
func TestMounted(t *testing.T) {
	sb := New(Options{})
	mux := http.NewServeMux()
	mux.Handle("/sandbox/", http.StripPrefix("/sandbox", sb))
	mux.Handle("/sandbox", http.StripPrefix("/sandbox", sb))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	resp, err := noRedirect.Get(srv.URL + "/sandbox")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusMovedPermanently || loc != "/sandbox/" {
		t.Fatalf("/sandbox: %d %q", resp.StatusCode, loc)
	}
	index := fetch(t, srv.URL+"/sandbox/")
	if !strings.Contains(index, "不是微信") || !strings.Contains(index, "not WeChat") || !strings.Contains(index, `href="_control/stats"`) {
		t.Fatalf("index:\n%s", index)
	}

	// The authorization page's links work under the prefix.
	pageURL := srv.URL + "/sandbox/connect/oauth2/authorize?" + authorizeQuery("https://app.example/cb", "snsapi_userinfo", "zz")
	page := fetch(t, pageURL)
	m := regexp.MustCompile(`id="user-` + OpenIDXiaoming + `"[^>]*href="([^"]+)"`).FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no link in:\n%s", page)
	}
	base, _ := url.Parse(pageURL)
	link, _ := base.Parse(html.UnescapeString(m[1]))
	resp, err = noRedirect.Get(link.String())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, _ := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusFound || loc.Host != "app.example" || loc.Query().Get("code") == "" || loc.Query().Get("state") != "zz" {
		t.Fatalf("confirm under prefix: %d %s", resp.StatusCode, loc)
	}
	if sb.Count("connect/oauth2/authorize/confirm") != 1 {
		t.Errorf("counts under prefix: %v", sb.Counts())
	}

	// Absolute URLs in answers include the prefix.
	tr := fetch(t, srv.URL+"/sandbox/cgi-bin/token?"+tokenQuery().Encode())
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	json.Unmarshal([]byte(tr), &tok)
	v := fetch(t, srv.URL+"/sandbox/cgi-bin/media/get?access_token="+tok.AccessToken+"&media_id="+MediaVideo)
	if want := `{"video_url":"` + srv.URL + `/sandbox/` + VideoPath + `"}`; v != want {
		t.Fatalf("video answer %s, want %s", v, want)
	}
}

func fetch(t *testing.T, u string) string {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", u, resp.StatusCode, b.Bytes())
	}
	return b.String()
}

// A fault's errmsg replaces WeChat's text; without one, 40164 names an IP
// the way WeChat does, for the status page to find.
func TestControlFaultErrmsg(t *testing.T) {
	e := newEnv(t)
	e.post("_control/fault", nil, `{"endpoint":"cgi-bin/token","errcode":40164,"times":1}`)
	a := e.get("cgi-bin/token", tokenQuery())
	var got apiError
	if err := json.Unmarshal(a.Body, &got); err != nil || got.Errcode != 40164 || !strings.HasPrefix(got.Errmsg, "invalid ip 203.0.113.7 ") {
		t.Fatalf("40164: %s (%v)", a.Body, err)
	}
	e.post("_control/fault", nil, `{"endpoint":"cgi-bin/token","errcode":40164,"errmsg":"invalid ip 198.51.100.9 ipv6 ::ffff:198.51.100.9, not in whitelist rid: 1","times":1}`)
	a = e.get("cgi-bin/token", tokenQuery())
	if err := json.Unmarshal(a.Body, &got); err != nil || got.Errcode != 40164 || got.Errmsg != "invalid ip 198.51.100.9 ipv6 ::ffff:198.51.100.9, not in whitelist rid: 1" {
		t.Fatalf("40164 with errmsg: %s (%v)", a.Body, err)
	}
	e.appToken() // both faults were used up
}
