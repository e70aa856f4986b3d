package rpc

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"

	"github.com/100steps/wxappliance/appliance/wire"
	"github.com/100steps/wxappliance/oauth"
)

// DefaultWeChatPaths is the wechat.call allowlist: the management APIs of
// an Official Account a backend needs day to day. An entry ending in "/"
// allows every path under it; any other allows that path only. Credentials
// (cgi-bin/token, stable_token, ticket/getticket: use token.get), quota
// resets and mass sends are left out on purpose.
var DefaultWeChatPaths = []string{
	"cgi-bin/menu/",                     // custom menus: create, get, delete, addconditional, delconditional, trymatch
	"cgi-bin/get_current_selfmenu_info", // the menu as configured, including one set on the web console
	"cgi-bin/user/",                     // user/info, info/batchget, info/updateremark (remarks), user/get, user/tag/get
	"cgi-bin/tags/",                     // tags, tags/members/batchtagging..., and the blacklist: tags/members/getblacklist, batchblacklist, batchunblacklist
	"cgi-bin/message/custom/",           // customer service messages: send, typing
	"cgi-bin/message/template/",         // template messages: send, subscribe
	"cgi-bin/template/",                 // template management: api_set_industry, get_industry, api_add_template, get_all_private_template, del_private_template
	"cgi-bin/qrcode/create",             // parametric QR codes
	"cgi-bin/message/subscribe/bizsend", // subscription notifications (订阅通知), which replace template messages
	"wxaapi/newtmpl/",                   // subscription templates: getcategory, getpubtemplatetitles, getpubtemplatekeywords, addtemplate, gettemplate, deltemplate
}

// pathPattern is what an API path may look like: segments of letters,
// digits, '_' and '-', so no "..", no query and no host can be smuggled in.
var pathPattern = regexp.MustCompile(`^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$`)

type allowlist struct {
	exact    map[string]bool
	prefixes []string
}

func newAllowlist(paths []string) (allowlist, error) {
	a := allowlist{exact: make(map[string]bool)}
	for _, p := range paths {
		if prefix, ok := strings.CutSuffix(p, "/"); ok {
			if !pathPattern.MatchString(prefix) {
				return a, fmt.Errorf("rpc: bad wechat.call allowlist entry %q", p)
			}
			a.prefixes = append(a.prefixes, p)
			continue
		}
		if !pathPattern.MatchString(p) {
			return a, fmt.Errorf("rpc: bad wechat.call allowlist entry %q", p)
		}
		a.exact[p] = true
	}
	return a, nil
}

func (a allowlist) allows(path string) bool {
	if !pathPattern.MatchString(path) {
		return false
	}
	if a.exact[path] {
		return true
	}
	for _, p := range a.prefixes {
		if strings.HasPrefix(path, p) {
			return true
		}
	}
	return false
}

// wechatCall: {method, path, query, body} -> WeChat's JSON answer. The app
// access_token is added by the server, with the refresh-and-retry rule of
// every other call: a caller-supplied access_token is refused, so a backend
// never works with a token of its own. body is sent byte for byte as the
// backend wrote it, never re-encoded: SDK users have long reported WeChat
// APIs mishandling \u-escaped Chinese, so what the backend chose stays.
func (s *Server) wechatCall(ctx context.Context, _ *conn, raw json.RawMessage) (any, error) {
	var p struct {
		Method string                     `json:"method"`
		Path   string                     `json:"path"`
		Query  map[string]json.RawMessage `json:"query"`
		Body   json.RawMessage            `json:"body"`
	}
	if err := decodeParams(raw, &p, required("path", &p.Path)); err != nil {
		return nil, err
	}
	path := strings.TrimPrefix(p.Path, "/")
	if !s.allow.allows(path) {
		return nil, invalidParams("path不在允许调用的微信接口列表中", nil)
	}
	hasBody := len(p.Body) > 0 && string(p.Body) != "null"
	method := strings.ToUpper(p.Method)
	switch {
	case method == "" && hasBody, method == http.MethodPost:
		method = http.MethodPost
	case method == "", method == http.MethodGet:
		method = http.MethodGet
		if hasBody {
			return nil, invalidParams("GET请求不能带body", nil)
		}
	default:
		return nil, invalidParams("method只能是GET或POST", nil)
	}
	query := url.Values{}
	for k, v := range p.Query {
		if k == "" || strings.EqualFold(k, "access_token") {
			return nil, invalidParams("query中不能有access_token：它由服务器添加", nil)
		}
		value, ok := queryValue(v)
		if !ok {
			return nil, invalidParams("query的值必须是字符串、数字或布尔值", nil)
		}
		query.Set(k, value)
	}
	req := oauth.Request{Method: method, Path: path, Query: query}
	if hasBody {
		req.Body = p.Body
	}
	var answer json.RawMessage
	if err := s.svc.App.CallJSON(ctx, req, &answer); err != nil {
		return nil, err
	}
	return wire.RawObject(answer)
}

// queryValue turns a JSON scalar into a query string value.
func queryValue(raw json.RawMessage) (string, bool) {
	var v any
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.UseNumber()
	if dec.Decode(&v) != nil {
		return "", false
	}
	switch v := v.(type) {
	case string:
		return v, true
	case json.Number:
		return v.String(), true
	case bool:
		return fmt.Sprint(v), true
	}
	return "", false
}
