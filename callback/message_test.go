package callback

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

// golden compares got with testdata/name, or writes it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s differs:\n got: %s\nwant: %s", name, got, want)
	}
}

const head = `<xml><ToUserName><![CDATA[toUser]]></ToUserName><FromUserName><![CDATA[fromUser]]></FromUserName><CreateTime>1348831860</CreateTime>`

func TestParseMessage(t *testing.T) {
	base := Message{ToUserName: "toUser", FromUserName: "fromUser", CreateTime: 1348831860}
	with := func(f func(*Message)) Message {
		m := base
		f(&m)
		return m
	}
	tests := []struct {
		name string
		xml  string
		want Message
	}{
		{"text", head + `<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[this is a test]]></Content><MsgId>1234567890123456</MsgId></xml>`,
			with(func(m *Message) { m.MsgType, m.Content, m.MsgID = "text", "this is a test", "1234567890123456" })},
		{"text keeps spaces and markup", head + `<MsgType>text</MsgType><Content><![CDATA[ <b>hi</b> & ]]]]><![CDATA[> ]]></Content><MsgId>1</MsgId></xml>`,
			with(func(m *Message) { m.MsgType, m.Content, m.MsgID = "text", " <b>hi</b> & ]]> ", "1" })},
		{"image", head + `<MsgType><![CDATA[image]]></MsgType><PicUrl><![CDATA[http://mmbiz/pic]]></PicUrl><MediaId><![CDATA[media_id]]></MediaId><MsgId>2</MsgId></xml>`,
			with(func(m *Message) {
				m.MsgType, m.PicURL, m.MediaID, m.MsgID = "image", "http://mmbiz/pic", "media_id", "2"
			})},
		{"voice with recognition", head + `<MsgType><![CDATA[voice]]></MsgType><MediaId><![CDATA[m]]></MediaId><Format><![CDATA[amr]]></Format><Recognition><![CDATA[腾讯微信团队]]></Recognition><MsgId>3</MsgId></xml>`,
			with(func(m *Message) {
				m.MsgType, m.MediaID, m.Format, m.Recognition, m.MsgID = "voice", "m", "amr", "腾讯微信团队", "3"
			})},
		{"video", head + `<MsgType><![CDATA[video]]></MsgType><MediaId><![CDATA[m]]></MediaId><ThumbMediaId><![CDATA[t]]></ThumbMediaId><MsgId>4</MsgId></xml>`,
			with(func(m *Message) { m.MsgType, m.MediaID, m.ThumbMediaID, m.MsgID = "video", "m", "t", "4" })},
		{"shortvideo", head + `<MsgType><![CDATA[shortvideo]]></MsgType><MediaId><![CDATA[m]]></MediaId><ThumbMediaId><![CDATA[t]]></ThumbMediaId><MsgId>5</MsgId></xml>`,
			with(func(m *Message) { m.MsgType, m.MediaID, m.ThumbMediaID, m.MsgID = "shortvideo", "m", "t", "5" })},
		{"location", head + `<MsgType><![CDATA[location]]></MsgType><Location_X>23.134521</Location_X><Location_Y>113.358803</Location_Y><Scale>20</Scale><Label><![CDATA[位置信息]]></Label><MsgId>6</MsgId></xml>`,
			with(func(m *Message) {
				m.MsgType, m.LocationX, m.LocationY, m.Scale, m.Label, m.MsgID = "location", "23.134521", "113.358803", "20", "位置信息", "6"
			})},
		{"link", head + `<MsgType><![CDATA[link]]></MsgType><Title><![CDATA[公众平台官网链接]]></Title><Description><![CDATA[描述]]></Description><Url><![CDATA[https://mp.weixin.qq.com]]></Url><MsgId>7</MsgId></xml>`,
			with(func(m *Message) {
				m.MsgType, m.Title, m.Description, m.URL, m.MsgID = "link", "公众平台官网链接", "描述", "https://mp.weixin.qq.com", "7"
			})},
		{"subscribe", head + `<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe]]></Event></xml>`,
			with(func(m *Message) { m.MsgType, m.Event = "event", "subscribe" })},
		{"subscribe through a QR code", head + `<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe]]></Event><EventKey><![CDATA[qrscene_123123]]></EventKey><Ticket><![CDATA[TICKET]]></Ticket></xml>`,
			with(func(m *Message) {
				m.MsgType, m.Event, m.EventKey, m.Ticket, m.Scene = "event", "subscribe", "qrscene_123123", "TICKET", "123123"
			})},
		{"unsubscribe", head + `<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[unsubscribe]]></Event></xml>`,
			with(func(m *Message) { m.MsgType, m.Event = "event", "unsubscribe" })},
		{"SCAN", head + `<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[SCAN]]></Event><EventKey><![CDATA[SCENE_VALUE]]></EventKey><Ticket><![CDATA[TICKET]]></Ticket></xml>`,
			with(func(m *Message) {
				m.MsgType, m.Event, m.EventKey, m.Ticket, m.Scene = "event", "SCAN", "SCENE_VALUE", "TICKET", "SCENE_VALUE"
			})},
		{"LOCATION", head + `<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[LOCATION]]></Event><Latitude>23.137466</Latitude><Longitude>113.352425</Longitude><Precision>119.385040</Precision></xml>`,
			with(func(m *Message) {
				m.MsgType, m.Event, m.Latitude, m.Longitude, m.Precision = "event", "LOCATION", "23.137466", "113.352425", "119.385040"
			})},
		{"CLICK", head + `<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[CLICK]]></Event><EventKey><![CDATA[V1001_TODAY_MUSIC]]></EventKey></xml>`,
			with(func(m *Message) { m.MsgType, m.Event, m.EventKey = "event", "CLICK", "V1001_TODAY_MUSIC" })},
		{"VIEW", head + `<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[VIEW]]></Event><EventKey><![CDATA[http://www.soso.com/]]></EventKey><MenuId>1</MenuId></xml>`,
			with(func(m *Message) { m.MsgType, m.Event, m.EventKey = "event", "VIEW", "http://www.soso.com/" })},
		{"unknown event keeps MsgID spelt in capitals", head + `<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event><MsgID>200163836</MsgID><Status><![CDATA[success]]></Status></xml>`,
			with(func(m *Message) { m.MsgType, m.Event, m.MsgID = "event", "TEMPLATESENDJOBFINISH", "200163836" })},
		{"unknown message type", head + `<MsgType><![CDATA[miniprogrampage]]></MsgType><Title><![CDATA[t]]></Title><AppId><![CDATA[wxapp]]></AppId><MsgId>8</MsgId></xml>`,
			with(func(m *Message) { m.MsgType, m.Title, m.MsgID = "miniprogrampage", "t", "8" })},
		{"whitespace around identifiers, as in WeChat's own sample", `<xml>
 <ToUserName> <![CDATA[toUser]]> </ToUserName>
 <FromUserName><![CDATA[fromUser]]></FromUserName>
 <CreateTime> 1348831860 </CreateTime>
 <MsgType>  <![CDATA[text]]></MsgType>
 <Content><![CDATA[x]]></Content>
 <MsgId>9</MsgId>
</xml>`, with(func(m *Message) { m.MsgType, m.Content, m.MsgID = "text", "x", "9" })},
		{"no fields at all", `<xml/>`, Message{}},
		{"CreateTime not a number", `<xml><CreateTime>soon</CreateTime><MsgType>text</MsgType></xml>`, Message{MsgType: "text"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseMessage([]byte(tt.xml))
			if err != nil {
				t.Fatal(err)
			}
			if got.Raw == nil {
				t.Fatal("Raw is nil")
			}
			raw := got.Raw
			got.Raw = nil
			if !reflect.DeepEqual(*got, tt.want) {
				t.Fatalf("got  %+v\nwant %+v", *got, tt.want)
			}
			// Every typed field also appears in Raw as sent.
			if tt.want.MsgType != "" && strings.TrimSpace(text(raw, "MsgType")) != tt.want.MsgType {
				t.Fatalf("Raw MsgType = %q", raw["MsgType"])
			}
		})
	}
}

func TestParseMessageRawNested(t *testing.T) {
	// pic_sysphoto: a menu event with nested and repeated elements.
	xml := head + `<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[pic_sysphoto]]></Event><EventKey><![CDATA[6]]></EventKey>
<SendPicsInfo><Count>2</Count><PicList><item><PicMd5Sum><![CDATA[a]]></PicMd5Sum></item><item><PicMd5Sum><![CDATA[b]]></PicMd5Sum></item></PicList></SendPicsInfo></xml>`
	m, err := ParseMessage([]byte(xml))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"Count": "2",
		"PicList": map[string]any{"item": []any{
			map[string]any{"PicMd5Sum": "a"},
			map[string]any{"PicMd5Sum": "b"},
		}},
	}
	if !reflect.DeepEqual(m.Raw["SendPicsInfo"], want) {
		t.Fatalf("SendPicsInfo = %#v", m.Raw["SendPicsInfo"])
	}
	if m.Event != "pic_sysphoto" || m.EventKey != "6" {
		t.Fatalf("typed fields %+v", m)
	}
}

// The JSON form goes to RPC backends: it must not change by accident.
func TestMessageJSON(t *testing.T) {
	m, err := ParseMessage([]byte(head + `<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe]]></Event><EventKey><![CDATA[qrscene_42]]></EventKey><Ticket><![CDATA[gQH47joAAAAAAAAAASxodHRwOi8vd2VpeGluLnFxLmNvbS9xL2tIVTU=]]></Ticket></xml>`))
	if err != nil {
		t.Fatal(err)
	}
	out, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "message_subscribe.json", append(out, '\n'))

	m, err = ParseMessage([]byte(head + `<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[你好 <&>]]></Content><MsgId>6054768590064713728</MsgId></xml>`))
	if err != nil {
		t.Fatal(err)
	}
	out, err = json.MarshalIndent(m, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "message_text.json", append(out, '\n'))

	var back Message
	if err := json.Unmarshal(out, &back); err != nil {
		t.Fatal(err)
	}
	if back.MsgID != "6054768590064713728" || back.Content != "你好 <&>" || back.Raw["MsgId"] != "6054768590064713728" {
		t.Fatalf("JSON round trip: %+v", back)
	}
}

func TestParseMessageRejectsMalformed(t *testing.T) {
	tests := map[string]string{
		"empty":               "",
		"not xml":             `{"msg_type":"text"}`,
		"other root":          `<root><MsgType>text</MsgType></root>`,
		"unclosed":            `<xml><MsgType>text</MsgType>`,
		"mismatched":          `<xml><MsgType>text</Content></xml>`,
		"text after":          `<xml></xml>trailing`,
		"second root":         `<xml></xml><xml></xml>`,
		"doctype":             `<!DOCTYPE xml [<!ENTITY x "y">]><xml><Content>&x;</Content></xml>`,
		"unknown entity":      `<xml><Content>&nbsp;</Content></xml>`,
		"NUL character":       "<xml><Content>a\x00b</Content></xml>",
		"invalid UTF-8":       "<xml><Content>\xff\xfe</Content></xml>",
		"too deep":            "<xml>" + strings.Repeat("<a>", maxDepth) + strings.Repeat("</a>", maxDepth) + "</xml>",
		"GBK declared":        `<?xml version="1.0" encoding="GBK"?><xml></xml>`,
		"unterminated cdata":  `<xml><Content><![CDATA[abc</Content></xml>`,
		"attribute unquoted":  `<xml a=b></xml>`,
		"just a declaration":  `<?xml version="1.0"?>`,
		"text before the xml": `hello<xml></xml>`,
		"two MsgIds":          `<xml><MsgId>1</MsgId><MsgId>2</MsgId></xml>`,
		"two FromUserNames":   `<xml><FromUserName>a</FromUserName><FromUserName>b</FromUserName></xml>`,
		"nested ToUserName":   `<xml><ToUserName><a>gh</a></ToUserName></xml>`,
		"MsgId and MsgID":     `<xml><MsgId>1</MsgId><MsgID>2</MsgID></xml>`,
	}
	for name, body := range tests {
		t.Run(name, func(t *testing.T) {
			m, err := ParseMessage([]byte(body))
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("err %v (message %+v), want ErrMalformed", err, m)
			}
		})
	}
	// Just under the depth limit is fine.
	ok := "<xml>" + strings.Repeat("<a>", maxDepth-1) + strings.Repeat("</a>", maxDepth-1) + "</xml>"
	if _, err := ParseMessage([]byte(ok)); err != nil {
		t.Fatalf("depth %d refused: %v", maxDepth, err)
	}
}

// Subscription notification events carry their templates in List items:
// one item is an element, several a list; both become Subscriptions.
func TestSubscriptionEvents(t *testing.T) {
	tests := []struct {
		name, body string
		want       []Subscription
	}{
		{"popup, two templates", `<xml><ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName><![CDATA[oU1]]></FromUserName>
<CreateTime>1610969440</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe_msg_popup_event]]></Event>
<SubscribeMsgPopupEvent>
<List><TemplateId><![CDATA[tplA]]></TemplateId><SubscribeStatusString><![CDATA[accept]]></SubscribeStatusString><PopupScene>2</PopupScene></List>
<List><TemplateId><![CDATA[tplB]]></TemplateId><SubscribeStatusString><![CDATA[reject]]></SubscribeStatusString><PopupScene>2</PopupScene></List>
</SubscribeMsgPopupEvent></xml>`, []Subscription{
			{TemplateID: "tplA", Status: "accept", PopupScene: "2"},
			{TemplateID: "tplB", Status: "reject", PopupScene: "2"},
		}},
		{"change, one template", `<xml><ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName><![CDATA[oU1]]></FromUserName>
<CreateTime>1610969468</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe_msg_change_event]]></Event>
<SubscribeMsgChangeEvent><List><TemplateId><![CDATA[tplA]]></TemplateId><SubscribeStatusString><![CDATA[reject]]></SubscribeStatusString></List></SubscribeMsgChangeEvent></xml>`,
			[]Subscription{{TemplateID: "tplA", Status: "reject"}}},
		{"sent", `<xml><ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName><![CDATA[oU1]]></FromUserName>
<CreateTime>1610969468</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe_msg_sent_event]]></Event>
<SubscribeMsgSentEvent><List><TemplateId><![CDATA[tplA]]></TemplateId><MsgID>1700827132819554304</MsgID><ErrorCode>0</ErrorCode><ErrorStatus><![CDATA[success]]></ErrorStatus></List></SubscribeMsgSentEvent></xml>`,
			[]Subscription{{TemplateID: "tplA", MsgID: "1700827132819554304", ErrorCode: "0", ErrorStatus: "success"}}},
		{"another event's container is ignored", `<xml><ToUserName>gh_1</ToUserName><FromUserName>oU1</FromUserName><CreateTime>1</CreateTime>
<MsgType>event</MsgType><Event>CLICK</Event><EventKey>k</EventKey><SubscribeMsgPopupEvent><List><TemplateId>x</TemplateId></List></SubscribeMsgPopupEvent></xml>`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := ParseMessage([]byte(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(m.Subscriptions, tt.want) {
				t.Fatalf("subscriptions %+v, want %+v", m.Subscriptions, tt.want)
			}
			// The bizsend's MsgID inside List is not the event's id: events
			// are deduped by sender, time and event.
			if m.MsgID != "" {
				t.Fatalf("msg_id %q taken from a List item", m.MsgID)
			}
		})
	}
}
