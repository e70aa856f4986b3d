package rpc_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/100steps/wxappliance/appliance/sandbox"
	"github.com/100steps/wxappliance/rpc"
)

func TestWeChatCall(t *testing.T) {
	e := newEnv(t)
	c := e.dial()

	// POST with a body: sent as the backend wrote it, Chinese unescaped.
	menu := `{"button":[{"type":"click","name":"今日歌曲","key":"V1001_TODAY_MUSIC"},{"type":"view","name":"搜索","url":"https://app.example.com/?a=1&b=2"}]}`
	var ok struct {
		Errcode int    `json:"errcode"`
		Errmsg  string `json:"errmsg"`
	}
	call(t, c, "wechat.call", map[string]any{"method": "POST", "path": "cgi-bin/menu/create", "body": json.RawMessage(menu)}, &ok)
	if ok.Errcode != 0 || ok.Errmsg != "ok" {
		t.Fatalf("menu/create: %+v", ok)
	}
	var got struct {
		Menu json.RawMessage `json:"menu"`
	}
	call(t, c, "wechat.call", map[string]any{"path": "/cgi-bin/menu/get"}, &got)
	var back struct {
		Button []struct{ Name, URL string }
	}
	if err := json.Unmarshal(got.Menu, &back); err != nil || len(back.Button) != 2 ||
		back.Button[0].Name != "今日歌曲" || back.Button[1].URL != "https://app.example.com/?a=1&b=2" {
		t.Fatalf("menu/get %s", got.Menu)
	}

	// The body goes to WeChat byte for byte as the backend wrote it,
	// whatever escapes it chose.
	r := e.raw()
	r.send(`{"jsonrpc":"2.0","id":1,"method":"wechat.call","params":{"method":"POST","path":"cgi-bin/menu/create",` +
		`"body":{"button":[{"type":"view","name":"\u641c索","url":"https://app.example.com/?a=1&b=2"}]}}}`)
	if ans := r.recv(); ans.Error != nil {
		t.Fatalf("raw menu/create: %s", ans.raw)
	}
	r.send(`{"jsonrpc":"2.0","id":2,"method":"wechat.call","params":{"path":"cgi-bin/menu/get"}}`)
	if ans := r.recv(); !strings.Contains(string(ans.Result), `"name":"\u641c索","url":"https://app.example.com/?a=1&b=2"`) {
		t.Fatalf("the body was re-encoded on the way: %s", ans.Result)
	}

	// GET with a query.
	var page struct {
		Total int `json:"total"`
		Data  struct {
			OpenID []string `json:"openid"`
		} `json:"data"`
	}
	call(t, c, "wechat.call", map[string]any{"method": "get", "path": "cgi-bin/user/get", "query": map[string]any{"next_openid": sandbox.OpenIDZhangsan}}, &page)
	if page.Total != 4 || len(page.Data.OpenID) != 3 || page.Data.OpenID[0] != sandbox.OpenIDXiaoming {
		t.Fatalf("user/get %+v", page)
	}

	// WeChat's errcode comes back with the error, for trusted backends.
	call(t, c, "wechat.call", map[string]any{"path": "cgi-bin/menu/delete"}, nil)
	nomenu := callErr(t, c, "wechat.call", map[string]any{"path": "cgi-bin/menu/get"}, rpc.CodeWeChat, 500)
	if nomenu.Data.Errcode != 46003 || nomenu.Data.Errmsg != "menu no exist" {
		t.Fatalf("menu/get without a menu: %+v", nomenu.Data)
	}
	subscribe := callErr(t, c, "wechat.call", map[string]any{"method": "POST", "path": "cgi-bin/message/custom/send",
		"body": map[string]any{"touser": sandbox.OpenIDLisi, "msgtype": "text", "text": map[string]string{"content": "hi"}}}, rpc.CodeWeChat, 500)
	if subscribe.Data.Errcode != 45015 {
		t.Fatalf("custom/send to a non-follower: %+v", subscribe.Data)
	}

	// Subscription notifications (订阅通知): templates, and bizsend.
	var tmpl struct {
		Data []struct {
			PriTmplID string `json:"priTmplId"`
			Title     string `json:"title"`
		} `json:"data"`
	}
	call(t, c, "wechat.call", map[string]any{"path": "wxaapi/newtmpl/gettemplate"}, &tmpl)
	if len(tmpl.Data) != 1 || tmpl.Data[0].PriTmplID != sandbox.SubscriptionTemplate || tmpl.Data[0].Title != "预约成功通知" {
		t.Fatalf("newtmpl/gettemplate: %+v", tmpl)
	}
	bizsend := func(to string) map[string]any {
		return map[string]any{"method": "POST", "path": "cgi-bin/message/subscribe/bizsend", "body": map[string]any{
			"touser": to, "template_id": sandbox.SubscriptionTemplate,
			"data": map[string]any{"thing1": map[string]string{"value": "游泳课"}, "time2": map[string]string{"value": "2026年12月1日 10:00"}}}}
	}
	call(t, c, "wechat.call", bizsend(sandbox.OpenIDZhangsan), &ok)
	if ok.Errcode != 0 {
		t.Fatalf("bizsend: %+v", ok)
	}
	if refused := callErr(t, c, "wechat.call", bizsend(sandbox.OpenIDLisi), rpc.CodeWeChat, 500); refused.Data.Errcode != 43101 {
		t.Fatalf("bizsend to a user who did not accept: %+v", refused.Data)
	}

	// A rejected token is replaced and the call retried once.
	e.sb.ExpireTokens()
	var tags struct {
		Tags []struct{ Name string } `json:"tags"`
	}
	call(t, c, "wechat.call", map[string]any{"path": "cgi-bin/tags/get"}, &tags)
	if len(tags.Tags) == 0 || tags.Tags[0].Name != "星标组" {
		t.Fatalf("tags/get after expiry: %+v", tags)
	}

	e.sb.SetFault("cgi-bin/qrcode/create", sandbox.Fault{Hang: true, Times: 1})
	callErr(t, c, "wechat.call", map[string]any{"path": "cgi-bin/qrcode/create", "body": map[string]string{"action_name": "QR_SCENE"}}, rpc.CodeTimeout, 504)
}

func TestWeChatCallRefusals(t *testing.T) {
	e := newEnv(t)
	c := e.dial()
	before := e.sb.Count("cgi-bin/token") + e.sb.Count("cgi-bin/stable_token") + e.sb.Count("cgi-bin/menu/get")
	for name, params := range map[string]map[string]any{
		"no path":                 {"method": "GET"},
		"credentials":             {"path": "cgi-bin/token", "query": map[string]string{"grant_type": "client_credential"}},
		"stable token":            {"method": "POST", "path": "cgi-bin/stable_token", "body": map[string]any{}},
		"jsapi ticket":            {"path": "cgi-bin/ticket/getticket"},
		"traversal":               {"path": "cgi-bin/menu/../token"},
		"encoded traversal":       {"path": "cgi-bin/menu/%2e%2e/token"},
		"query in path":           {"path": "cgi-bin/menu/get?access_token=x"},
		"host in path":            {"path": "//evil.example/cgi-bin/menu/get"},
		"prefix without slash":    {"path": "cgi-bin/menux"},
		"caller's token":          {"path": "cgi-bin/menu/get", "query": map[string]string{"access_token": "mine"}},
		"caller's token, cased":   {"path": "cgi-bin/menu/get", "query": map[string]string{"ACCESS_TOKEN": "mine"}},
		"object in query":         {"path": "cgi-bin/user/get", "query": map[string]any{"next_openid": map[string]string{}}},
		"GET with a body":         {"method": "GET", "path": "cgi-bin/menu/get", "body": map[string]any{"a": 1}},
		"other method":            {"method": "DELETE", "path": "cgi-bin/menu/delete"},
		"unknown member":          {"path": "cgi-bin/menu/get", "headers": map[string]string{}},
		"mass send not allowlist": {"method": "POST", "path": "cgi-bin/message/mass/sendall", "body": map[string]any{}},
	} {
		t.Run(name, func(t *testing.T) {
			callErr(t, c, "wechat.call", params, rpc.CodeInvalidParams, 400)
		})
	}
	after := e.sb.Count("cgi-bin/token") + e.sb.Count("cgi-bin/stable_token") + e.sb.Count("cgi-bin/menu/get")
	if after != before {
		t.Fatalf("a refused call reached WeChat (%d calls)", after-before)
	}
}
