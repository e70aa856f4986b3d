package sandbox

import (
	"bytes"
	"net/url"
	"reflect"
	"testing"
)

func TestUserInfo(t *testing.T) {
	e := newEnv(t)
	tok := e.appToken()

	a := e.userInfo(tok, OpenIDZhangsan)
	if ct := a.Header.Get("Content-Type"); ct != "application/json; encoding=utf-8" {
		t.Errorf("Content-Type %q", ct)
	}
	m := a.json(t)
	want := map[string]any{
		"subscribe": float64(1), "openid": OpenIDZhangsan, "sex": float64(1),
		"language": "zh_CN", "city": "广州", "province": "广东", "country": "中国",
		"subscribe_time": float64(1700000000), "remark": "测试备注", "groupid": float64(0),
		"subscribe_scene": "ADD_SCENE_QR_CODE", "qr_scene": float64(0), "qr_scene_str": "",
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %v, want %v", k, m[k], v)
		}
	}
	if !reflect.DeepEqual(m["tagid_list"], []any{float64(2)}) {
		t.Errorf("tagid_list %v", m["tagid_list"])
	}
	// Since 2021 user/info has no nickname or avatar: sns/userinfo does.
	if m["nickname"] != nil || m["headimgurl"] != nil {
		t.Errorf("nickname %v, headimgurl %v in user/info", m["nickname"], m["headimgurl"])
	}
	if !bytes.Contains(a.Body, []byte(`"remark":"测试备注","groupid":0`)) {
		t.Errorf("not raw UTF-8 in WeChat's field order: %s", a.Body)
	}

	// Markup stays raw: json.Marshal's default would write \u003c. A user
	// who authorized after 2021 has no gender, region or language.
	tom := e.userInfo(tok, OpenIDTom)
	if !bytes.Contains(tom.Body, []byte(`"remark":"<b>VIP</b> & \"friend\""`)) || !bytes.Contains(tom.Body, []byte(`"sex":0,"language":"","city":"","province":"","country":""`)) {
		t.Errorf("HTML-escaped answer or a new user with a region: %s", tom.Body)
	}
	if got := tom.json(t)["tagid_list"]; !reflect.DeepEqual(got, []any{}) {
		t.Errorf("empty tagid_list answered as %v", got)
	}

	un := e.userInfo(tok, OpenIDUnsubscribed).json(t)
	if un["subscribe"] != float64(0) || un["openid"] != OpenIDLisi || un["nickname"] != nil {
		t.Errorf("unsubscribed: %v", un)
	}

	wantErr(t, e.userInfo(tok, "oSBX_nobody"), 40003)
	wantErr(t, e.userInfo("", OpenIDZhangsan), 41001)
	wantErr(t, e.get("cgi-bin/user/info", url.Values{"access_token": {tok}}), 41009)
}

func TestUserGet(t *testing.T) {
	e := newEnv(t)
	tok := e.appToken()
	m := e.get("cgi-bin/user/get", url.Values{"access_token": {tok}}).json(t)
	wantIDs := []any{OpenIDZhangsan, OpenIDXiaoming, OpenIDAhua, OpenIDTom}
	if m["total"] != float64(4) || m["count"] != float64(4) || m["next_openid"] != OpenIDTom {
		t.Fatalf("user/get: %v", m)
	}
	if ids := m["data"].(map[string]any)["openid"]; !reflect.DeepEqual(ids, wantIDs) {
		t.Fatalf("openids %v", ids)
	}
	page := e.get("cgi-bin/user/get", url.Values{"access_token": {tok}, "next_openid": {OpenIDXiaoming}}).json(t)
	if page["count"] != float64(2) || page["total"] != float64(4) || page["next_openid"] != OpenIDTom {
		t.Fatalf("second page: %v", page)
	}
	end := e.get("cgi-bin/user/get", url.Values{"access_token": {tok}, "next_openid": {OpenIDTom}}).json(t)
	if end["count"] != float64(0) || end["data"] != nil || end["next_openid"] != "" {
		t.Fatalf("past the end: %v", end)
	}
	wantErr(t, e.get("cgi-bin/user/get", nil), 41001)
}

func TestMenu(t *testing.T) {
	e := newEnv(t)
	tok := e.appToken()
	q := url.Values{"access_token": {tok}}

	wantErr(t, e.get("cgi-bin/menu/get", q), 46003)
	if m := e.get("cgi-bin/get_current_selfmenu_info", q).json(t); m["is_menu_open"] != float64(0) {
		t.Errorf("selfmenu without menu: %v", m)
	}

	menu := `{"button":[{"type":"view","name":"首页 & <更多>","url":"https://app.example/"}]}`
	a := e.post("cgi-bin/menu/create", q, menu)
	if m := a.json(t); m["errcode"] != float64(0) || m["errmsg"] != "ok" {
		t.Fatalf("menu/create: %s", a.Body)
	}
	got := e.get("cgi-bin/menu/get", q)
	if want := `{"menu":` + menu + `}`; string(got.Body) != want {
		t.Fatalf("menu/get:\n got %s\nwant %s", got.Body, want)
	}
	self := e.get("cgi-bin/get_current_selfmenu_info", q).json(t)
	if self["is_menu_open"] != float64(1) || self["selfmenu_info"] == nil {
		t.Errorf("selfmenu: %v", self)
	}

	wantErr(t, e.post("cgi-bin/menu/create", q, `{"button":`), 47001)
	wantErr(t, e.post("cgi-bin/menu/create", q, `{"button":[]}`), 40016)
	wantErr(t, e.post("cgi-bin/menu/create", nil, menu), 41001)
	wantErr(t, e.get("cgi-bin/menu/create", q), 43002)

	if m := e.get("cgi-bin/menu/delete", q).json(t); m["errcode"] != float64(0) {
		t.Fatalf("menu/delete: %v", m)
	}
	wantErr(t, e.get("cgi-bin/menu/get", q), 46003)
}

func TestMessages(t *testing.T) {
	e := newEnv(t)
	q := url.Values{"access_token": {e.appToken()}}

	ok := e.post("cgi-bin/message/custom/send", q, `{"touser":"`+OpenIDZhangsan+`","msgtype":"text","text":{"content":"你好"}}`)
	if ok.errcode(t) != 0 || ok.json(t)["errmsg"] != "ok" {
		t.Fatalf("custom/send: %s", ok.Body)
	}
	wantErr(t, e.post("cgi-bin/message/custom/send", q, `{"touser":"oSBX_nobody","msgtype":"text"}`), 40003)
	wantErr(t, e.post("cgi-bin/message/custom/send", q, `{"touser":"`+OpenIDLisi+`","msgtype":"text"}`), 45015)
	wantErr(t, e.post("cgi-bin/message/custom/send", q, `not json`), 47001)

	tpl := `{"touser":"` + OpenIDXiaoming + `","template_id":"tpl1","data":{}}`
	first := e.post("cgi-bin/message/template/send", q, tpl).json(t)
	second := e.post("cgi-bin/message/template/send", q, tpl).json(t)
	if first["errcode"] != float64(0) || first["msgid"] == nil || first["msgid"] == second["msgid"] {
		t.Fatalf("template/send: %v then %v", first, second)
	}
	wantErr(t, e.post("cgi-bin/message/template/send", q, `{"touser":"`+OpenIDXiaoming+`"}`), 40037)
	wantErr(t, e.post("cgi-bin/message/template/send", q, `{"touser":"`+OpenIDLisi+`","template_id":"t"}`), 43004)
}

func TestQRCode(t *testing.T) {
	e := newEnv(t)
	q := url.Values{"access_token": {e.appToken()}}
	tmp := e.post("cgi-bin/qrcode/create", q, `{"expire_seconds":604800,"action_name":"QR_SCENE","action_info":{"scene":{"scene_id":123}}}`).json(t)
	if tmp["ticket"] == nil || tmp["url"] == nil || tmp["expire_seconds"] != float64(604800) {
		t.Fatalf("temporary: %v", tmp)
	}
	perm := e.post("cgi-bin/qrcode/create", q, `{"action_name":"QR_LIMIT_STR_SCENE","action_info":{"scene":{"scene_str":"x"}}}`).json(t)
	if perm["ticket"] == nil || perm["ticket"] == tmp["ticket"] || perm["expire_seconds"] != nil {
		t.Fatalf("permanent: %v", perm)
	}
	wantErr(t, e.post("cgi-bin/qrcode/create", q, `{"action_name":"QR_NOPE"}`), 40097)
}

func TestTags(t *testing.T) {
	e := newEnv(t)
	q := url.Values{"access_token": {e.appToken()}}
	c := e.post("cgi-bin/tags/create", q, `{"tag":{"name":"广东"}}`).json(t)
	tag, _ := c["tag"].(map[string]any)
	if tag == nil || tag["name"] != "广东" || tag["id"] == nil {
		t.Fatalf("tags/create: %v", c)
	}
	wantErr(t, e.post("cgi-bin/tags/create", q, `{"tag":{"name":"广东"}}`), 45157)
	wantErr(t, e.post("cgi-bin/tags/create", q, `{"tag":{"name":""}}`), 45157)
	wantErr(t, e.post("cgi-bin/tags/create", q, `{"tag":{"name":"0123456789012345678901234567890"}}`), 45158)

	tags := e.get("cgi-bin/tags/get", q).json(t)["tags"].([]any)
	if len(tags) != 2 || tags[1].(map[string]any)["name"] != "广东" || tags[1].(map[string]any)["id"] != tag["id"] {
		t.Fatalf("tags/get: %v", tags)
	}
	wantErr(t, e.get("cgi-bin/tags/get", nil), 41001)
}

func TestUnknownEndpoint(t *testing.T) {
	e := newEnv(t)
	a := e.get("cgi-bin/nope", nil)
	if a.Status != 404 || !bytes.Contains(a.Body, []byte("sandbox: no such endpoint")) {
		t.Fatalf("unknown endpoint: %d %q", a.Status, a.Body)
	}
	if n := len(e.sb.Counts()); n != 0 {
		t.Errorf("unknown endpoint was counted: %v", e.sb.Counts())
	}
}
