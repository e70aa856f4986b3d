package appliance

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"
)

// FuzzCheckReturnURL: whatever is accepted is an absolute http(s) URL whose
// host, as Go and as a browser would read it, is an allowed one.
func FuzzCheckReturnURL(f *testing.F) {
	for _, s := range []string{
		"https://app.example.com/page?x=1#/r", "//evil.com", "/\\evil.com", "https:evil.com",
		"https://app.example.com@evil.com", "https://evil.com#@app.example.com", "javascript:alert(1)",
		"https://app.example.com%2F@evil.com", "https://a.school.example/", "https://app.example.com:8443/",
		"https://[::1]:80/", "HTTPS://APP.EXAMPLE.COM/", "https://app.example.com/%0d%0a",
	} {
		f.Add(s)
	}
	allowed := hostMatcher([]string{"app.example.com", "app.example.com:8443", "*.school.example"})
	f.Fuzz(func(t *testing.T, raw string) {
		got, err := checkReturnURL(raw, allowed)
		if err != nil {
			return
		}
		if got != raw {
			t.Fatalf("accepted URL changed: %q -> %q", raw, got)
		}
		u, perr := url.Parse(raw)
		if perr != nil {
			t.Fatalf("accepted %q that does not parse: %v", raw, perr)
		}
		if u.Scheme != "http" && u.Scheme != "https" && !strings.EqualFold(u.Scheme, "http") && !strings.EqualFold(u.Scheme, "https") {
			t.Fatalf("accepted scheme %q", u.Scheme)
		}
		if !allowed(u.Host) || u.User != nil {
			t.Fatalf("accepted %q with host %q", raw, u.Host)
		}
		// Browsers treat backslash as slash and drop tabs and newlines;
		// none of those may be in an accepted URL.
		if strings.ContainsAny(raw, "\\\t\r\n ") {
			t.Fatalf("accepted %q with characters browsers reinterpret", raw)
		}
		if !strings.HasPrefix(strings.ToLower(raw), "http://") && !strings.HasPrefix(strings.ToLower(raw), "https://") {
			t.Fatalf("accepted %q without scheme://", raw)
		}
	})
}

// FuzzParseConfig: no input panics, and an accepted config validates or
// fails with errors naming keys.
func FuzzParseConfig(f *testing.F) {
	f.Add("[wechat]\nsandbox = true\n")
	f.Add("[server]\nlisten = \"127.0.0.1:1\"\n[wechat]\ntimeout = \"5s\"\napi_fallback = [\"https://a\"]\n")
	f.Add("[[rpc.keys]]\nname = \"a\"\nkey = \"0123456789abcdef\"\n")
	f.Add("[oauth]\nsession_ttl = 5\n")
	f.Fuzz(func(t *testing.T, in string) {
		cfg, err := ParseConfig(strings.NewReader(in))
		if err != nil {
			return
		}
		if err := cfg.Validate(); err != nil {
			if !strings.Contains(err.Error(), ": ") {
				t.Fatalf("validation error without a key: %v", err)
			}
		}
	})
}

// FuzzPlainURLBody: whatever the fast path reads, json.Unmarshal reads
// the same way.
func FuzzPlainURLBody(f *testing.F) {
	for _, s := range []string{`{"url":"https://app.example.com/p?x=1&y=2"}`, `{"url":"a\"b"}`, `{"url":"\u00e9"}`, `{"url":""}`, `{"URL":"x"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		got, ok := plainURLBody(body)
		if !ok {
			return
		}
		var in struct {
			URL string `json:"url"`
		}
		if err := json.Unmarshal(body, &in); err != nil || in.URL != got {
			t.Fatalf("fast path read %q from %q; json.Unmarshal %q, %v", got, body, in.URL, err)
		}
	})
}
