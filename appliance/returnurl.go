package appliance

import (
	"errors"
	"net/url"
	"strconv"
	"strings"
)

var errBadReturnURL = errors.New("return url refused")

// maxReturnURL bounds the page a login returns to, which is stored for ten
// minutes by every anonymous /auth: 2 KiB holds any real page address
// (browsers and proxies have long capped URLs near it) and halves what a
// flood can make the store hold.
const maxReturnURL = 2048

// checkReturnURL accepts raw only if it is an absolute http(s) URL on an
// allowed host, and returns it unchanged. It is strict where browsers are
// lenient: "//evil", "/\evil", "https:evil", "https:/evil", user@host,
// backslashes, control characters and percent-encoded CR/LF are refused
// before any parsing, so no reading of the URL can find another host in it.
func checkReturnURL(raw string, allowed func(host string) bool) (string, error) {
	if raw == "" || len(raw) > maxReturnURL {
		return "", errBadReturnURL
	}
	for i := 0; i < len(raw); i++ {
		if c := raw[i]; c <= ' ' || c == 0x7f || c == '\\' {
			return "", errBadReturnURL
		}
	}
	lower := strings.ToLower(raw)
	for _, enc := range []string{"%0d", "%0a", "%00"} {
		if strings.Contains(lower, enc) {
			return "", errBadReturnURL
		}
	}
	if !strings.HasPrefix(lower, "http://") && !strings.HasPrefix(lower, "https://") {
		return "", errBadReturnURL
	}
	u, err := url.Parse(raw)
	if err != nil || u.User != nil || u.Opaque != "" || !validHost(u.Host) {
		return "", errBadReturnURL
	}
	if !allowed(u.Host) {
		return "", errBadReturnURL
	}
	return raw, nil
}

// validHost accepts a DNS name or bracketed IPv6 literal, with an optional
// numeric port, in ASCII: no percent-escapes or sub-delimiters a later
// decoder might turn into something else.
func validHost(hostport string) bool {
	host, port := hostport, ""
	if i := strings.LastIndexByte(hostport, ':'); i >= 0 && !strings.HasSuffix(hostport, "]") {
		host, port = hostport[:i], hostport[i+1:]
		if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 {
			return false
		}
	}
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		inner := host[1 : len(host)-1]
		return inner != "" && strings.Trim(strings.ToLower(inner), "0123456789abcdef:.") == ""
	}
	if host == "" || host[0] == '.' || host[0] == '-' {
		return false
	}
	for i := 0; i < len(host); i++ {
		c := host[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

// appendQuery adds key=value to the query of u, before any fragment, so
// single-page apps keep their #/route.
func appendQuery(u, key, value string) string {
	base, frag, hasFrag := strings.Cut(u, "#")
	sep := "?"
	if strings.Contains(base, "?") {
		sep = "&"
		if strings.HasSuffix(base, "?") || strings.HasSuffix(base, "&") {
			sep = ""
		}
	}
	out := base + sep + url.QueryEscape(key) + "=" + url.QueryEscape(value)
	if hasFrag {
		out += "#" + frag
	}
	return out
}
