package oauth_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/100steps/wxappliance/oauth"
)

func TestDecodeIgnoresContentType(t *testing.T) {
	const body = `{"nickname":"小明😀","city":"广州","x":"\ue415"}`
	for _, ct := range []string{"text/plain", "application/json; encoding=utf-8", "application/octet-stream", ""} {
		t.Run(ct, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header()["Content-Type"] = []string{ct}
				w.Write([]byte(body))
			}))
			defer srv.Close()
			var out struct{ Nickname, City, X string }
			if err := newClient(t, srv.URL).CallJSON(context.Background(), oauth.Request{Path: "sns/userinfo"}, &out); err != nil {
				t.Fatal(err)
			}
			if out.Nickname != "小明😀" || out.City != "广州" || out.X != "\ue415" {
				t.Fatalf("decoded %+v", out)
			}
		})
	}
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
		check  func(error) bool
	}{
		{"errcode", 200, `{"errcode":40013,"errmsg":"invalid appid"}`, func(err error) bool { return oauth.HasCode(err, 40013) }},
		{"errcode zero is success", 200, `{"errcode":0,"errmsg":"ok"}`, func(err error) bool { return err == nil }},
		{"malformed", 200, `{"access_token":`, func(err error) bool { return errors.Is(err, oauth.ErrBadResponse) }},
		{"html", 200, `<html>gateway</html>`, func(err error) bool { return errors.Is(err, oauth.ErrBadResponse) }},
		{"404", 404, `not found`, func(err error) bool { return errors.Is(err, oauth.ErrBadResponse) }},
		{"5xx", 503, `busy`, func(err error) bool { return errors.Is(err, oauth.ErrUnavailable) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tt.status)
				w.Write([]byte(tt.body))
			}))
			defer srv.Close()
			err := newClient(t, srv.URL).CallJSON(context.Background(), oauth.Request{Path: "cgi-bin/x"}, nil)
			if !tt.check(err) {
				t.Fatalf("unexpected err: %v", err)
			}
		})
	}
}

// Errors end up in logs: they must not carry the query, where secrets,
// codes and tokens travel.
func TestErrorsCarryNoQuery(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + ln.Addr().String()
	ln.Close()
	err = newClient(t, down).CallJSON(context.Background(), oauth.Request{
		Path:  "cgi-bin/token",
		Query: url.Values{"secret": {"TOPSECRET"}, "access_token": {"TOKENVALUE"}},
	}, nil)
	if err == nil {
		t.Fatal("want an error")
	}
	for _, s := range []string{"TOPSECRET", "TOKENVALUE", "secret="} {
		if strings.Contains(err.Error(), s) {
			t.Fatalf("error %q leaks %q", err, s)
		}
	}
}

func TestRequestShape(t *testing.T) {
	var got *http.Request
	var body string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r
		b := make([]byte, 100)
		n, _ := r.Body.Read(b)
		body = string(b[:n])
		w.Write([]byte(`{}`))
	}))
	defer srv.Close()
	err := newClient(t, srv.URL+"/prefix/").CallJSON(context.Background(), oauth.Request{
		Method: http.MethodPost, Path: "cgi-bin/menu/create",
		Query: url.Values{"access_token": {"T"}}, Body: []byte(`{"button":[]}`),
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.Method != "POST" || got.URL.Path != "/prefix/cgi-bin/menu/create" || got.URL.Query().Get("access_token") != "T" {
		t.Fatalf("request %s %s", got.Method, got.URL)
	}
	if ct := got.Header.Get("Content-Type"); ct != "application/json" || body != `{"button":[]}` {
		t.Fatalf("content-type %q body %q", ct, body)
	}
}

func TestNewClientRejectsBadBase(t *testing.T) {
	for _, base := range []string{"", "api.weixin.qq.com", "ftp://x", "http://"} {
		if _, err := oauth.NewClient(oauth.ClientConfig{BaseURL: base, Timeout: 1}); err == nil {
			t.Errorf("base %q accepted", base)
		}
	}
}
