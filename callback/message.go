package callback

import (
	"fmt"
	"strconv"
	"strings"
)

// Message types (MsgType).
const (
	TypeText       = "text"
	TypeImage      = "image"
	TypeVoice      = "voice"
	TypeVideo      = "video"
	TypeShortVideo = "shortvideo"
	TypeLocation   = "location"
	TypeLink       = "link"
	TypeEvent      = "event"
)

// Event names (Event, when MsgType is "event"), spelt as WeChat sends them.
// Compare with strings.EqualFold or Message.IsEvent.
const (
	EventSubscribe   = "subscribe"
	EventUnsubscribe = "unsubscribe"
	EventScan        = "SCAN"
	EventLocation    = "LOCATION"
	EventClick       = "CLICK"
	EventView        = "VIEW"

	// Subscription notifications (订阅通知): the user answered the popup
	// of wx-open-subscribe, changed a template in the account's settings,
	// or a bizsend was delivered (or not).
	EventSubscribeMsgPopup  = "subscribe_msg_popup_event"
	EventSubscribeMsgChange = "subscribe_msg_change_event"
	EventSubscribeMsgSent   = "subscribe_msg_sent_event"
)

// subscriptionContainers names the element holding the List items of each
// subscription notification event.
var subscriptionContainers = map[string]string{
	EventSubscribeMsgPopup:  "SubscribeMsgPopupEvent",
	EventSubscribeMsgChange: "SubscribeMsgChangeEvent",
	EventSubscribeMsgSent:   "SubscribeMsgSentEvent",
}

// Subscription is one List item of a subscription notification event: a
// template the user accepted or rejected (popup, change), or the outcome
// of one bizsend (sent).
type Subscription struct {
	TemplateID  string `json:"template_id"`
	Status      string `json:"status,omitempty"`       // SubscribeStatusString: "accept" or "reject" (popup, change)
	PopupScene  string `json:"popup_scene,omitempty"`  // where the popup was shown (popup)
	MsgID       string `json:"msg_id,omitempty"`       // the bizsend's msgid (sent)
	ErrorCode   string `json:"error_code,omitempty"`   // "0" when delivered (sent)
	ErrorStatus string `json:"error_status,omitempty"` // "success", "failed:user refuse", "failed:system failed" (sent)
}

// qrScenePrefix starts the EventKey of a subscribe through a parametric QR
// code ("qrscene_123"); SCAN (already a follower) sends the bare value.
const qrScenePrefix = "qrscene_"

// Message is one push from WeChat: a user's message or an event. It is what
// rules and RPC subscribers see, so its JSON form is part of the RPC
// protocol and stable:
//
//	{
//	  "to_user_name": "gh_...",           // the account's original ID
//	  "from_user_name": "oABC...",        // the sender's openid
//	  "create_time": 1348831860,          // Unix seconds
//	  "msg_type": "text",                 // text image voice video shortvideo location link event, or anything new
//	  "msg_id": "1234567890123456",       // a string: 64-bit ids do not survive JavaScript numbers
//	  "content": "...",                   // text
//	  "pic_url": "...", "media_id": "...",// image; media_id also voice, video, shortvideo
//	  "format": "amr", "recognition": "...",        // voice; recognition when speech recognition is on
//	  "thumb_media_id": "...",            // video, shortvideo
//	  "location_x": "23.13", "location_y": "113.26", "scale": "20", "label": "...", // location message
//	  "title": "...", "description": "...", "url": "...",                            // link
//	  "event": "subscribe",               // events: subscribe unsubscribe SCAN LOCATION CLICK VIEW ...
//	  "event_key": "qrscene_123",         // CLICK key, VIEW URL, QR scene
//	  "ticket": "...",                    // QR code ticket (subscribe via QR, SCAN)
//	  "scene": "123",                     // the QR scene value without "qrscene_" (subscribe via QR, SCAN)
//	  "latitude": "23.13", "longitude": "113.26", "precision": "119.38",           // LOCATION event
//	  "subscriptions": [{"template_id": "...", "status": "accept", ...}],        // subscribe_msg_*_event, see Subscription
//	  "raw": {"ToUserName": "gh_...", ...} // every field as sent, see below
//	}
//
// Typed fields other than create_time are WeChat's text unchanged (numbers
// included, so nothing is rounded); empty ones are left out. raw holds every
// field of the XML as sent, typed or not, so a message or event this package
// does not know (or a field WeChat adds) reaches subscribers intact: a leaf
// is a string, a nested element an object, a repeated element a list.
type Message struct {
	ToUserName   string `json:"to_user_name"`
	FromUserName string `json:"from_user_name"`
	CreateTime   int64  `json:"create_time"`
	MsgType      string `json:"msg_type"`
	MsgID        string `json:"msg_id,omitempty"`

	Content      string `json:"content,omitempty"`
	PicURL       string `json:"pic_url,omitempty"`
	MediaID      string `json:"media_id,omitempty"`
	Format       string `json:"format,omitempty"`
	Recognition  string `json:"recognition,omitempty"`
	ThumbMediaID string `json:"thumb_media_id,omitempty"`
	LocationX    string `json:"location_x,omitempty"`
	LocationY    string `json:"location_y,omitempty"`
	Scale        string `json:"scale,omitempty"`
	Label        string `json:"label,omitempty"`
	Title        string `json:"title,omitempty"`
	Description  string `json:"description,omitempty"`
	URL          string `json:"url,omitempty"`

	Event     string `json:"event,omitempty"`
	EventKey  string `json:"event_key,omitempty"`
	Ticket    string `json:"ticket,omitempty"`
	Scene     string `json:"scene,omitempty"`
	Latitude  string `json:"latitude,omitempty"`
	Longitude string `json:"longitude,omitempty"`
	Precision string `json:"precision,omitempty"`

	Subscriptions []Subscription `json:"subscriptions,omitempty"`

	Raw map[string]any `json:"raw"`
}

// ParseMessage parses a decrypted (or plaintext) message body. Any
// well-formed <xml> document is a message: unknown types and events are kept
// with their fields in Raw, never refused, unless a field Message reads is
// repeated or has child elements (see typedFields). Errors wrap
// ErrMalformed.
func ParseMessage(data []byte) (*Message, error) {
	fields, err := parseFields(data)
	if err != nil {
		return nil, err
	}
	return messageFromFields(fields)
}

// typedFields are the top-level elements Message reads into typed fields.
// Each must appear at most once and hold only text. A repeated one is
// ambiguous: its typed field would be empty while Raw holds a list, so a
// message could be deduped under another identity than the one a
// subscriber sees (two MsgIds), or answered to nobody (two FromUserNames).
// Other elements may repeat or nest, at the top level (Raw keeps a list)
// and inside containers (SendPicsInfo, ScanCodeInfo, CopyrightCheckResult).
var typedFields = []string{
	"ToUserName", "FromUserName", "CreateTime", "MsgType", "MsgId", "MsgID",
	"Content", "PicUrl", "MediaId", "Format", "Recognition", "ThumbMediaId",
	"Location_X", "Location_Y", "Scale", "Label", "Title", "Description", "Url",
	"Event", "EventKey", "Ticket", "Latitude", "Longitude", "Precision",
}

// checkTyped refuses a message whose typed fields are ambiguous.
func checkTyped(f map[string]any) error {
	for _, name := range typedFields {
		switch f[name].(type) {
		case nil, string:
		case []any:
			return fmt.Errorf("%w: <%s> appears more than once", ErrMalformed, name)
		default:
			return fmt.Errorf("%w: <%s> has child elements", ErrMalformed, name)
		}
	}
	// Some events spell MsgId as MsgID; with both, which one names the
	// message would be a guess.
	if a, b := text(f, "MsgId"), text(f, "MsgID"); a != "" && b != "" && strings.TrimSpace(a) != strings.TrimSpace(b) {
		return fmt.Errorf("%w: MsgId and MsgID differ", ErrMalformed)
	}
	return nil
}

func messageFromFields(f map[string]any) (*Message, error) {
	if err := checkTyped(f); err != nil {
		return nil, err
	}
	id := func(name string) string { return strings.TrimSpace(text(f, name)) }
	m := &Message{
		ToUserName:   id("ToUserName"),
		FromUserName: id("FromUserName"),
		MsgType:      id("MsgType"),
		MsgID:        id("MsgId"),

		Content:      text(f, "Content"),
		PicURL:       id("PicUrl"),
		MediaID:      id("MediaId"),
		Format:       id("Format"),
		Recognition:  text(f, "Recognition"),
		ThumbMediaID: id("ThumbMediaId"),
		LocationX:    id("Location_X"),
		LocationY:    id("Location_Y"),
		Scale:        id("Scale"),
		Label:        text(f, "Label"),
		Title:        text(f, "Title"),
		Description:  text(f, "Description"),
		URL:          id("Url"),

		Event:     id("Event"),
		EventKey:  id("EventKey"),
		Ticket:    id("Ticket"),
		Latitude:  id("Latitude"),
		Longitude: id("Longitude"),
		Precision: id("Precision"),

		Raw: f,
	}
	if m.MsgID == "" {
		m.MsgID = id("MsgID") // some events (template and mass sends) spell it so
	}
	// A CreateTime that is not a number stays 0 here and intact in Raw.
	m.CreateTime, _ = strconv.ParseInt(id("CreateTime"), 10, 64)
	if m.MsgType == TypeEvent {
		m.Subscriptions = subscriptions(f[subscriptionContainers[m.Event]])
	}
	switch {
	case m.IsEvent(EventSubscribe) && strings.HasPrefix(m.EventKey, qrScenePrefix):
		m.Scene = strings.TrimPrefix(m.EventKey, qrScenePrefix)
	case m.IsEvent(EventScan):
		m.Scene = m.EventKey
	}
	return m, nil
}

// IsEvent reports whether m is the event name (case-insensitively: WeChat
// spells subscribe in lower case and the others in upper case).
func (m *Message) IsEvent(name string) bool {
	return m.MsgType == TypeEvent && strings.EqualFold(m.Event, name)
}

// subscriptions reads the List items of a subscription notification
// event's container: one item is an object, several a list. Items that are
// not elements are skipped: Raw still holds them.
func subscriptions(container any) []Subscription {
	c, ok := container.(map[string]any)
	if !ok {
		return nil
	}
	items, ok := c["List"].([]any)
	if !ok {
		items = []any{c["List"]}
	}
	var out []Subscription
	for _, it := range items {
		f, ok := it.(map[string]any)
		if !ok {
			continue
		}
		id := func(name string) string { return strings.TrimSpace(text(f, name)) }
		out = append(out, Subscription{
			TemplateID:  id("TemplateId"),
			Status:      id("SubscribeStatusString"),
			PopupScene:  id("PopupScene"),
			MsgID:       id("MsgID"),
			ErrorCode:   id("ErrorCode"),
			ErrorStatus: id("ErrorStatus"),
		})
	}
	return out
}
