package sandbox

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"unicode/utf8"
)

// maxBody caps request bodies of management APIs.
const maxBody = 1 << 20

// handleUserInfo serves GET cgi-bin/user/info. Non-followers get only
// subscribe and openid, as with WeChat.
func (s *Sandbox) handleUserInfo(w http.ResponseWriter, r *http.Request) {
	if !s.appToken(w, r, ctypeJSON) {
		return
	}
	openid := r.URL.Query().Get("openid")
	if openid == "" {
		writeErr(w, ctypeJSON, 41009)
		return
	}
	u, ok := findUser(openid)
	if !ok {
		writeErr(w, ctypeJSON, 40003)
		return
	}
	if !u.Subscribed {
		writeJSON(w, ctypeJSON, struct {
			Subscribe int    `json:"subscribe"`
			OpenID    string `json:"openid"`
			UnionID   string `json:"unionid,omitempty"`
		}{0, u.OpenID, u.UnionID})
		return
	}
	// No nickname and no headimgurl: WeChat stopped returning them here at
	// the end of 2021.
	writeJSON(w, ctypeJSON, struct {
		Subscribe      int    `json:"subscribe"`
		OpenID         string `json:"openid"`
		Sex            int    `json:"sex"`
		Language       string `json:"language"`
		City           string `json:"city"`
		Province       string `json:"province"`
		Country        string `json:"country"`
		SubscribeTime  int64  `json:"subscribe_time"`
		UnionID        string `json:"unionid,omitempty"`
		Remark         string `json:"remark"`
		GroupID        int    `json:"groupid"`
		TagIDList      []int  `json:"tagid_list"`
		SubscribeScene string `json:"subscribe_scene"`
		QRScene        int    `json:"qr_scene"`
		QRSceneStr     string `json:"qr_scene_str"`
	}{
		1, u.OpenID, u.Sex, u.Language, u.City, u.Province, u.Country,
		u.SubscribeTime, u.UnionID, u.Remark, u.GroupID,
		nonNil(u.TagIDs), u.SubscribeScene, 0, "",
	})
}

func nonNil(ids []int) []int {
	if ids == nil {
		return []int{}
	}
	return ids
}

// handleUserGet serves GET cgi-bin/user/get: the followers after
// next_openid. Like WeChat, next_openid in the answer is the last openid
// returned, and a page past the end has count 0 and no data.
func (s *Sandbox) handleUserGet(w http.ResponseWriter, r *http.Request) {
	if !s.appToken(w, r, ctypeJSON) {
		return
	}
	var followers []string
	for _, u := range users {
		if u.Subscribed {
			followers = append(followers, u.OpenID)
		}
	}
	page := followers
	if next := r.URL.Query().Get("next_openid"); next != "" {
		i := indexOf(followers, next)
		if i < 0 {
			writeErr(w, ctypeJSON, 40003)
			return
		}
		page = followers[i+1:]
	}
	type data struct {
		OpenID []string `json:"openid"`
	}
	ans := struct {
		Total      int    `json:"total"`
		Count      int    `json:"count"`
		Data       *data  `json:"data,omitempty"`
		NextOpenID string `json:"next_openid"`
	}{Total: len(followers), Count: len(page)}
	if len(page) > 0 {
		ans.Data = &data{OpenID: page}
		ans.NextOpenID = page[len(page)-1]
	}
	writeJSON(w, ctypeJSON, ans)
}

func indexOf(list []string, v string) int {
	for i, x := range list {
		if x == v {
			return i
		}
	}
	return -1
}

// postJSON checks the method and token of a POST management API and
// decodes its body into v. It answers the error itself and reports false
// when the request cannot proceed.
func (s *Sandbox) postJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	if r.Method != http.MethodPost {
		writeErr(w, ctypeJSON, 43002)
		return false
	}
	if !s.appToken(w, r, ctypeJSON) {
		return false
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody))
	if err != nil || json.Unmarshal(body, v) != nil {
		writeErr(w, ctypeJSON, 47001)
		return false
	}
	return true
}

// handleMenuCreate serves POST cgi-bin/menu/create, storing the menu as
// sent so menu/get can answer it back.
func (s *Sandbox) handleMenuCreate(w http.ResponseWriter, r *http.Request) {
	var raw json.RawMessage
	if !s.postJSON(w, r, &raw) {
		return
	}
	var menu struct {
		Button []json.RawMessage `json:"button"`
	}
	if json.Unmarshal(raw, &menu) != nil {
		writeErr(w, ctypeJSON, 47001)
		return
	}
	if len(menu.Button) == 0 || len(menu.Button) > 3 {
		writeErr(w, ctypeJSON, 40016)
		return
	}
	var compact bytes.Buffer
	json.Compact(&compact, raw)
	s.mu.Lock()
	s.state.menu = compact.Bytes()
	s.mu.Unlock()
	writeJSON(w, ctypeJSON, okAnswer)
}

// storedMenu returns the menu of the last menu/create, or nil.
func (s *Sandbox) storedMenu() json.RawMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state.menu
}

// handleMenuGet serves GET cgi-bin/menu/get.
func (s *Sandbox) handleMenuGet(w http.ResponseWriter, r *http.Request) {
	if !s.appToken(w, r, ctypeJSON) {
		return
	}
	menu := s.storedMenu()
	if menu == nil {
		writeErr(w, ctypeJSON, 46003)
		return
	}
	writeJSON(w, ctypeJSON, struct {
		Menu json.RawMessage `json:"menu"`
	}{menu})
}

// handleSelfMenuInfo serves GET cgi-bin/get_current_selfmenu_info, which
// WeChat answers with its own shape rather than menu/get's, and without an
// error when no menu is set.
func (s *Sandbox) handleSelfMenuInfo(w http.ResponseWriter, r *http.Request) {
	if !s.appToken(w, r, ctypeJSON) {
		return
	}
	menu := s.storedMenu()
	if menu == nil {
		writeJSON(w, ctypeJSON, struct {
			IsMenuOpen int `json:"is_menu_open"`
		}{0})
		return
	}
	writeJSON(w, ctypeJSON, struct {
		IsMenuOpen   int             `json:"is_menu_open"`
		SelfMenuInfo json.RawMessage `json:"selfmenu_info"`
	}{1, menu})
}

// handleMenuDelete serves GET cgi-bin/menu/delete.
func (s *Sandbox) handleMenuDelete(w http.ResponseWriter, r *http.Request) {
	if !s.appToken(w, r, ctypeJSON) {
		return
	}
	s.mu.Lock()
	s.state.menu = nil
	s.mu.Unlock()
	writeJSON(w, ctypeJSON, okAnswer)
}

// handleCustomSend serves POST cgi-bin/message/custom/send. Sending to
// someone who does not follow the account fails as with WeChat.
func (s *Sandbox) handleCustomSend(w http.ResponseWriter, r *http.Request) {
	var raw json.RawMessage
	if !s.postJSON(w, r, &raw) {
		return
	}
	var msg struct {
		ToUser  string `json:"touser"`
		MsgType string `json:"msgtype"`
	}
	json.Unmarshal(raw, &msg)
	u, ok := findUser(msg.ToUser)
	switch {
	case !ok:
		writeErr(w, ctypeJSON, 40003)
	case msg.MsgType == "" || !customTypes[msg.MsgType]:
		writeErr(w, ctypeJSON, 40008)
	case !u.Subscribed:
		// The sandbox's stand-in for "no message from the user in the
		// last 48 hours".
		writeErr(w, ctypeJSON, 45015)
	default:
		s.recordCustom(raw)
		writeJSON(w, ctypeJSON, okAnswer)
	}
}

var customTypes = map[string]bool{"text": true, "image": true, "voice": true, "video": true, "music": true,
	"news": true, "mpnews": true, "mpnewsarticle": true, "msgmenu": true, "wxcard": true, "miniprogrampage": true}

// maxCustom is how many customer service messages the sandbox remembers.
const maxCustom = 20

func (s *Sandbox) recordCustom(raw json.RawMessage) {
	var compact bytes.Buffer
	json.Compact(&compact, raw)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.state.custom = append(s.state.custom, compact.Bytes())
	if n := len(s.state.custom); n > maxCustom {
		s.state.custom = s.state.custom[n-maxCustom:]
	}
}

// CustomMessages returns the customer service messages sent to the
// sandbox's users (cgi-bin/message/custom/send), oldest first, at most the
// last 20: what late callback replies became.
func (s *Sandbox) CustomMessages() []json.RawMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]json.RawMessage, len(s.state.custom))
	for i, m := range s.state.custom {
		out[i] = json.RawMessage(m)
	}
	return out
}

// SubscriptionTemplate is the sandbox account's one subscription
// notification template (订阅通知), listed by wxaapi/newtmpl/gettemplate.
const SubscriptionTemplate = "sandbox-template-1"

// handleBizSend serves POST cgi-bin/message/subscribe/bizsend. Every test
// user but the one who does not follow the account has accepted the
// sandbox's template; 43101 is WeChat's answer for a user who has not.
func (s *Sandbox) handleBizSend(w http.ResponseWriter, r *http.Request) {
	var msg struct {
		ToUser     string          `json:"touser"`
		TemplateID string          `json:"template_id"`
		Data       json.RawMessage `json:"data"`
	}
	if !s.postJSON(w, r, &msg) {
		return
	}
	u, ok := findUser(msg.ToUser)
	switch {
	case !ok:
		writeErr(w, ctypeJSON, 40003)
	case msg.TemplateID != SubscriptionTemplate:
		writeErr(w, ctypeJSON, 40037)
	case len(msg.Data) == 0:
		writeErr(w, ctypeJSON, 47003)
	case !u.Subscribed:
		writeErr(w, ctypeJSON, 43101)
	default:
		writeJSON(w, ctypeJSON, okAnswer)
	}
}

// handleGetTemplates serves GET wxaapi/newtmpl/gettemplate: the account's
// subscription templates.
func (s *Sandbox) handleGetTemplates(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, ctypeJSON, map[string]any{
		"errcode": 0, "errmsg": "ok",
		"data": []map[string]any{{
			"priTmplId": SubscriptionTemplate,
			"title":     "预约成功通知",
			"content":   "预约项目:{{thing1.DATA}}\n预约时间:{{time2.DATA}}\n",
			"example":   "预约项目:游泳课\n预约时间:2026年12月1日 10:00\n",
			"type":      2,
		}},
	})
}

// handleTemplateSend serves POST cgi-bin/message/template/send.
func (s *Sandbox) handleTemplateSend(w http.ResponseWriter, r *http.Request) {
	var msg struct {
		ToUser     string `json:"touser"`
		TemplateID string `json:"template_id"`
	}
	if !s.postJSON(w, r, &msg) {
		return
	}
	u, ok := findUser(msg.ToUser)
	switch {
	case !ok:
		writeErr(w, ctypeJSON, 40003)
		return
	case msg.TemplateID == "":
		writeErr(w, ctypeJSON, 40037)
		return
	case !u.Subscribed:
		writeErr(w, ctypeJSON, 43004)
		return
	}
	writeJSON(w, ctypeJSON, struct {
		Errcode int    `json:"errcode"`
		Errmsg  string `json:"errmsg"`
		MsgID   int64  `json:"msgid"`
	}{0, "ok", s.nextID()})
}

func (s *Sandbox) nextID() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.state.nextID++
	return s.state.nextID
}

// handleQRCodeCreate serves POST cgi-bin/qrcode/create. Temporary codes
// answer expire_seconds (default 30, at most 30 days); permanent ones
// do not.
func (s *Sandbox) handleQRCodeCreate(w http.ResponseWriter, r *http.Request) {
	var req struct {
		ExpireSeconds int64  `json:"expire_seconds"`
		ActionName    string `json:"action_name"`
	}
	if !s.postJSON(w, r, &req) {
		return
	}
	ans := struct {
		Ticket        string `json:"ticket"`
		ExpireSeconds int64  `json:"expire_seconds,omitempty"`
		URL           string `json:"url"`
	}{}
	switch req.ActionName {
	case "QR_SCENE", "QR_STR_SCENE":
		ans.ExpireSeconds = req.ExpireSeconds
		if ans.ExpireSeconds <= 0 {
			ans.ExpireSeconds = 30
		}
		ans.ExpireSeconds = min(ans.ExpireSeconds, 2592000)
	case "QR_LIMIT_SCENE", "QR_LIMIT_STR_SCENE":
	default:
		writeErr(w, ctypeJSON, 40097)
		return
	}
	id := nonce(18)
	ans.Ticket = "gQSBX" + id
	ans.URL = "http://weixin.qq.com/q/sandbox" + id
	writeJSON(w, ctypeJSON, ans)
}

// tag is a user tag of cgi-bin/tags.
type tag struct {
	ID    int64  `json:"id"`
	Name  string `json:"name"`
	Count int    `json:"count"`
}

// defaultTags are the tags every account has.
func defaultTags() []tag {
	return []tag{{ID: 2, Name: "星标组", Count: 1}}
}

// handleTagsCreate serves POST cgi-bin/tags/create.
func (s *Sandbox) handleTagsCreate(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Tag struct {
			Name string `json:"name"`
		} `json:"tag"`
	}
	if !s.postJSON(w, r, &req) {
		return
	}
	name := req.Tag.Name
	if utf8.RuneCountInString(name) > 30 {
		writeErr(w, ctypeJSON, 45158)
		return
	}
	t, ok := s.addTag(name)
	if !ok {
		writeErr(w, ctypeJSON, 45157)
		return
	}
	type created struct {
		ID   int64  `json:"id"`
		Name string `json:"name"`
	}
	writeJSON(w, ctypeJSON, struct {
		Tag created `json:"tag"`
	}{created{t.ID, t.Name}})
}

// addTag creates the tag name; empty and duplicate names are refused.
func (s *Sandbox) addTag(name string) (tag, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if name == "" {
		return tag{}, false
	}
	for _, t := range s.state.tags {
		if t.Name == name {
			return tag{}, false
		}
	}
	s.state.nextID++
	t := tag{ID: s.state.nextID, Name: name}
	s.state.tags = append(s.state.tags, t)
	return t, true
}

// handleTagsGet serves GET cgi-bin/tags/get.
func (s *Sandbox) handleTagsGet(w http.ResponseWriter, r *http.Request) {
	if !s.appToken(w, r, ctypeJSON) {
		return
	}
	s.mu.Lock()
	tags := append([]tag(nil), s.state.tags...)
	s.mu.Unlock()
	writeJSON(w, ctypeJSON, struct {
		Tags []tag `json:"tags"`
	}{tags})
}
