package sandbox

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Error codes the sandbox answers, with WeChat's errmsg texts. Real WeChat
// appends " rid: ..." (a request id) to errmsg; the sandbox does not, so
// tests may compare messages, and clients must only ever act on errcode.
var errmsgs = map[int]string{
	-1:    "system error",
	40001: "invalid credential, access_token is invalid or not latest",
	40002: "invalid grant_type",
	40003: "invalid openid",
	40007: "invalid media_id",
	40008: "invalid message type",
	40013: "invalid appid",
	40016: "invalid button size",
	40029: "invalid code",
	40030: "invalid refresh_token",
	40037: "invalid template_id",
	40097: "invalid args",
	40125: "invalid appsecret",
	40163: "code been used",
	// WeChat names the IP it saw; 203.0.113.0/24 is for documentation.
	40164: "invalid ip 203.0.113.7 ipv6 ::ffff:203.0.113.7, not in whitelist",
	41001: "access_token missing",
	41002: "appid missing",
	41003: "refresh_token missing",
	41004: "appsecret missing",
	41006: "media_id missing",
	41008: "missing code",
	41009: "missing openid",
	42001: "access_token expired",
	42002: "refresh_token expired",
	43002: "require POST method",
	43004: "require subscribe",
	43101: "user refuse to accept the msg",
	45009: "reach max api daily quota limit",
	47003: "argument invalid! data.thing1.value invalid",
	45011: "api minute-quota reach limit",
	45015: "response out of time limit or subscription is canceled",
	45157: "invalid tag name",
	45158: "tag name too long",
	46003: "menu no exist",
	47001: "data format error",
	48001: "api unauthorized",
}

// errmsg returns WeChat's text for code.
func errmsg(code int) string {
	if m, ok := errmsgs[code]; ok {
		return m
	}
	return "sandbox error " + strconv.Itoa(code)
}

// apiError is WeChat's error answer. Field order matters to nobody but
// matches WeChat's, which helps when comparing captures.
type apiError struct {
	Errcode int    `json:"errcode"`
	Errmsg  string `json:"errmsg"`
}

// marshal encodes v like WeChat: no HTML escaping (so "<", "&" and the
// like stay raw), non-ASCII as raw UTF-8, and no trailing newline.
func marshal(v any) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		// Only the sandbox's own types are encoded; failing is a bug.
		panic("sandbox: encoding answer: " + err.Error())
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// writeJSON answers 200 with v encoded as JSON under ctype.
func writeJSON(w http.ResponseWriter, ctype string, v any) {
	body := marshal(v)
	w.Header().Set("Content-Type", ctype)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	w.Write(body)
}

// writeErr answers WeChat's error object with HTTP 200, as WeChat does.
func writeErr(w http.ResponseWriter, ctype string, code int) {
	writeJSON(w, ctype, apiError{Errcode: code, Errmsg: errmsg(code)})
}

// okAnswer is the plain success answer of management APIs.
var okAnswer = apiError{Errcode: 0, Errmsg: "ok"}

// basePath returns the path prefix the sandbox is mounted under (e.g.
// "/sandbox", or "" when served at the root), derived by comparing the
// request line with the path left after http.StripPrefix.
func basePath(r *http.Request) string {
	if r.RequestURI == "" {
		return ""
	}
	u, err := url.ParseRequestURI(r.RequestURI)
	if err != nil {
		return ""
	}
	full, rest := u.EscapedPath(), r.URL.EscapedPath()
	if !strings.HasSuffix(full, rest) {
		return ""
	}
	return strings.TrimSuffix(full, rest)
}

// baseURL returns the absolute URL of the sandbox root as the client sees
// it, without a trailing slash; used for URLs WeChat answers absolute
// (headimgurl, video_url).
func baseURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	if p := r.Header.Get("X-Forwarded-Proto"); p == "http" || p == "https" {
		scheme = p
	}
	return scheme + "://" + r.Host + basePath(r)
}
