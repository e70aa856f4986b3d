package callback

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Reply types.
const (
	ReplyText  = "text"
	ReplyImage = "image"
	ReplyVoice = "voice"
	ReplyVideo = "video"
	ReplyMusic = "music"
	ReplyNews  = "news"
)

// MaxArticles is the most articles a news reply may carry (WeChat's limit
// since 2018; it shows only the first for replies to some message types).
const MaxArticles = 8

// ErrBadReply is wrapped by Reply.Validate's errors.
var ErrBadReply = errors.New("invalid reply")

// Reply is a passive reply. It comes from rules or from an RPC subscriber,
// so its JSON form is part of the RPC protocol and stable:
//
//	{"type": "text", "content": "你好"}
//	{"type": "image", "media_id": "..."}
//	{"type": "voice", "media_id": "..."}
//	{"type": "video", "media_id": "...", "title": "...", "description": "..."}
//	{"type": "music", "title": "...", "description": "...", "music_url": "...",
//	 "hq_music_url": "...", "thumb_media_id": "..."}
//	{"type": "news", "articles": [{"title": "...", "description": "...",
//	 "pic_url": "...", "url": "..."}]}
//
// Fields another type does not use must be empty. Validate before use: a
// reply that fails is never sent, the user gets nothing ("success").
type Reply struct {
	Type         string    `json:"type"`
	Content      string    `json:"content,omitempty"`
	MediaID      string    `json:"media_id,omitempty"`
	Title        string    `json:"title,omitempty"`
	Description  string    `json:"description,omitempty"`
	MusicURL     string    `json:"music_url,omitempty"`
	HQMusicURL   string    `json:"hq_music_url,omitempty"`
	ThumbMediaID string    `json:"thumb_media_id,omitempty"`
	Articles     []Article `json:"articles,omitempty"`
}

// Article is one item of a news reply.
type Article struct {
	Title       string `json:"title"`
	Description string `json:"description,omitempty"`
	PicURL      string `json:"pic_url,omitempty"`
	URL         string `json:"url,omitempty"`
}

// Validate reports whether WeChat would accept r: a known type, the fields
// that type requires, no field of another type, and text that XML can
// carry. Errors wrap ErrBadReply and name the field.
func (r *Reply) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrBadReply, fmt.Sprintf(format, args...))
	}
	if r == nil {
		return bad("no reply")
	}
	// used lists the fields each type may set; required, those it must.
	var used, required []string
	switch r.Type {
	case ReplyText:
		used, required = []string{"content"}, []string{"content"}
	case ReplyImage, ReplyVoice:
		used, required = []string{"media_id"}, []string{"media_id"}
	case ReplyVideo:
		used, required = []string{"media_id", "title", "description"}, []string{"media_id"}
	case ReplyMusic:
		used = []string{"title", "description", "music_url", "hq_music_url", "thumb_media_id"}
		required = []string{"thumb_media_id"}
	case ReplyNews:
		used = []string{"articles"}
	case "":
		return bad("type is empty")
	default:
		return bad("unknown type %q (want text, image, voice, video, music or news)", r.Type)
	}
	fields := map[string]string{
		"content": r.Content, "media_id": r.MediaID, "title": r.Title, "description": r.Description,
		"music_url": r.MusicURL, "hq_music_url": r.HQMusicURL, "thumb_media_id": r.ThumbMediaID,
	}
	for name, v := range fields {
		if v != "" && !slices.Contains(used, name) {
			return bad("%s is not used by a %s reply", name, r.Type)
		}
		if !validXMLText(v) {
			return bad("%s holds characters XML cannot carry", name)
		}
	}
	for _, name := range required {
		if strings.TrimSpace(fields[name]) == "" {
			return bad("a %s reply needs %s", r.Type, name)
		}
	}
	if r.Type != ReplyNews {
		if len(r.Articles) > 0 {
			return bad("articles is not used by a %s reply", r.Type)
		}
		return nil
	}
	if len(r.Articles) == 0 || len(r.Articles) > MaxArticles {
		return bad("a news reply needs 1 to %d articles, got %d", MaxArticles, len(r.Articles))
	}
	for i, a := range r.Articles {
		if strings.TrimSpace(a.Title) == "" {
			return bad("articles[%d] needs a title", i)
		}
		for _, v := range []string{a.Title, a.Description, a.PicURL, a.URL} {
			if !validXMLText(v) {
				return bad("articles[%d] holds characters XML cannot carry", i)
			}
		}
	}
	return nil
}

// validXMLText reports whether s is UTF-8 made only of characters XML 1.0
// allows: a NUL or a stray control character would make WeChat reject the
// whole reply.
func validXMLText(s string) bool {
	for i, r := range s {
		if r == utf8.RuneError {
			if _, size := utf8.DecodeRuneInString(s[i:]); size == 1 {
				return false
			}
		}
		switch {
		case r == '\t' || r == '\n' || r == '\r':
		case r >= 0x20 && r <= 0xD7FF:
		case r >= 0xE000 && r <= 0xFFFD:
		case r >= 0x10000 && r <= 0x10FFFF:
		default:
			return false
		}
	}
	return true
}

// renderReply appends r as WeChat's reply XML to buf, addressed to the
// message's sender from the account. r must be valid.
func renderReply(buf *bytes.Buffer, r *Reply, msg *Message, createTime int64) {
	buf.WriteString("<xml>\n")
	cdataElem(buf, "ToUserName", msg.FromUserName)
	cdataElem(buf, "FromUserName", msg.ToUserName)
	numberElem(buf, "CreateTime", createTime)
	cdataElem(buf, "MsgType", r.Type)
	switch r.Type {
	case ReplyText:
		cdataElem(buf, "Content", r.Content)
	case ReplyImage:
		buf.WriteString("<Image>\n")
		cdataElem(buf, "MediaId", r.MediaID)
		buf.WriteString("</Image>\n")
	case ReplyVoice:
		buf.WriteString("<Voice>\n")
		cdataElem(buf, "MediaId", r.MediaID)
		buf.WriteString("</Voice>\n")
	case ReplyVideo:
		buf.WriteString("<Video>\n")
		cdataElem(buf, "MediaId", r.MediaID)
		cdataElem(buf, "Title", r.Title)
		cdataElem(buf, "Description", r.Description)
		buf.WriteString("</Video>\n")
	case ReplyMusic:
		buf.WriteString("<Music>\n")
		cdataElem(buf, "Title", r.Title)
		cdataElem(buf, "Description", r.Description)
		cdataElem(buf, "MusicUrl", r.MusicURL)
		cdataElem(buf, "HQMusicUrl", r.HQMusicURL)
		cdataElem(buf, "ThumbMediaId", r.ThumbMediaID)
		buf.WriteString("</Music>\n")
	case ReplyNews:
		numberElem(buf, "ArticleCount", int64(len(r.Articles)))
		buf.WriteString("<Articles>\n")
		for _, a := range r.Articles {
			buf.WriteString("<item>\n")
			cdataElem(buf, "Title", a.Title)
			cdataElem(buf, "Description", a.Description)
			cdataElem(buf, "PicUrl", a.PicURL)
			cdataElem(buf, "Url", a.URL)
			buf.WriteString("</item>\n")
		}
		buf.WriteString("</Articles>\n")
	}
	buf.WriteString("</xml>")
}

// renderEncrypted appends the envelope of an encrypted reply to buf.
func renderEncrypted(buf *bytes.Buffer, encrypt, signature, timestamp, nonce string) {
	buf.WriteString("<xml>\n")
	cdataElem(buf, "Encrypt", encrypt)
	cdataElem(buf, "MsgSignature", signature)
	buf.WriteString("<TimeStamp>")
	buf.WriteString(timestamp)
	buf.WriteString("</TimeStamp>\n")
	cdataElem(buf, "Nonce", nonce)
	buf.WriteString("</xml>")
}

// cdataElem writes <name><![CDATA[value]]></name> as WeChat does. A "]]>"
// inside value would end the section early, so it is split across two
// sections: "]]" ends the first, ">" starts the second.
func cdataElem(buf *bytes.Buffer, name, value string) {
	buf.WriteByte('<')
	buf.WriteString(name)
	buf.WriteString("><![CDATA[")
	for {
		i := strings.Index(value, "]]>")
		if i < 0 {
			break
		}
		buf.WriteString(value[:i+2])
		buf.WriteString("]]><![CDATA[")
		value = value[i+2:]
	}
	buf.WriteString(value)
	buf.WriteString("]]></")
	buf.WriteString(name)
	buf.WriteString(">\n")
}

func numberElem(buf *bytes.Buffer, name string, n int64) {
	buf.WriteByte('<')
	buf.WriteString(name)
	buf.WriteByte('>')
	buf.WriteString(strconv.FormatInt(n, 10))
	buf.WriteString("</")
	buf.WriteString(name)
	buf.WriteString(">\n")
}

// CustomMessage is r as the body of cgi-bin/message/custom/send to the user
// openid: the customer service message WeChat's documentation advises when
// a passive reply cannot be ready within five seconds.
func (r *Reply) CustomMessage(openid string) ([]byte, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	body := map[string]any{"touser": openid, "msgtype": r.Type}
	switch r.Type {
	case "text":
		body["text"] = map[string]string{"content": r.Content}
	case "image", "voice":
		body[r.Type] = map[string]string{"media_id": r.MediaID}
	case "video":
		body["video"] = map[string]string{"media_id": r.MediaID, "thumb_media_id": r.ThumbMediaID, "title": r.Title, "description": r.Description}
	case "music":
		body["music"] = map[string]string{"title": r.Title, "description": r.Description, "musicurl": r.MusicURL, "hqmusicurl": r.HQMusicURL, "thumb_media_id": r.ThumbMediaID}
	case "news":
		articles := make([]map[string]string, len(r.Articles))
		for i, a := range r.Articles {
			articles[i] = map[string]string{"title": a.Title, "description": a.Description, "url": a.URL, "picurl": a.PicURL}
		}
		body["news"] = map[string]any{"articles": articles}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // WeChat shows \u003c as it is
	if err := enc.Encode(body); err != nil {
		return nil, err
	}
	return bytes.TrimSpace(buf.Bytes()), nil
}
