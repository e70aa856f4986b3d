package callback

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
)

var replyTo = &Message{ToUserName: "gh_account", FromUserName: "oUser"}

func TestRenderReplyGolden(t *testing.T) {
	tests := []struct {
		name  string
		reply Reply
	}{
		{"text", Reply{Type: ReplyText, Content: "你好\n第二行 <b>&amp;</b> and ]]> inside"}},
		{"image", Reply{Type: ReplyImage, MediaID: "media_id_1"}},
		{"voice", Reply{Type: ReplyVoice, MediaID: "media_id_2"}},
		{"video", Reply{Type: ReplyVideo, MediaID: "media_id_3", Title: "标题", Description: "描述"}},
		{"music", Reply{Type: ReplyMusic, Title: "歌", Description: "d", MusicURL: "http://m/a.mp3", HQMusicURL: "http://m/a-hq.mp3", ThumbMediaID: "thumb"}},
		{"news", Reply{Type: ReplyNews, Articles: []Article{
			{Title: "第一篇", Description: "一", PicURL: "https://p/1.jpg", URL: "https://a/1?x=1&y=2"},
			{Title: "second", URL: "https://a/2"},
		}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.reply.Validate(); err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			renderReply(&buf, &tt.reply, replyTo, 1700000000)
			golden(t, "reply_"+tt.name+".xml", buf.Bytes())

			// Whatever the content, the XML parses back to it.
			f, err := parseFields(buf.Bytes())
			if err != nil {
				t.Fatalf("rendered reply is not valid XML: %v", err)
			}
			if text(f, "ToUserName") != "oUser" || text(f, "FromUserName") != "gh_account" || text(f, "MsgType") != tt.reply.Type {
				t.Fatalf("addressing: %v", f)
			}
			if tt.reply.Type == ReplyText && text(f, "Content") != tt.reply.Content {
				t.Fatalf("Content parsed back as %q", text(f, "Content"))
			}
		})
	}
}

func TestCDATASplitsTerminator(t *testing.T) {
	for _, s := range []string{"]]>", "a]]>b]]>c", "]]]]>>", "]]", "]>", "<![CDATA[x]]>"} {
		var buf bytes.Buffer
		buf.WriteString("<xml>")
		cdataElem(&buf, "C", s)
		buf.WriteString("</xml>")
		f, err := parseFields(buf.Bytes())
		if err != nil {
			t.Fatalf("%q: %v: %s", s, err, buf.Bytes())
		}
		if got := text(f, "C"); got != s {
			t.Fatalf("%q came back as %q", s, got)
		}
	}
}

func TestReplyValidate(t *testing.T) {
	eight := make([]Article, 8)
	for i := range eight {
		eight[i] = Article{Title: "t"}
	}
	tests := []struct {
		name  string
		reply *Reply
		ok    bool
	}{
		{"text", &Reply{Type: "text", Content: "hi"}, true},
		{"nil", nil, false},
		{"no type", &Reply{Content: "hi"}, false},
		{"unknown type", &Reply{Type: "sticker", Content: "hi"}, false},
		{"empty text", &Reply{Type: "text"}, false},
		{"blank text", &Reply{Type: "text", Content: " \n"}, false},
		{"text with NUL", &Reply{Type: "text", Content: "a\x00b"}, false},
		{"text with escape char", &Reply{Type: "text", Content: "a\x1bb"}, false},
		{"text with invalid UTF-8", &Reply{Type: "text", Content: "a\xffb"}, false},
		{"text with U+FFFE", &Reply{Type: "text", Content: "a\uFFFEb"}, false},
		{"text with emoji and private use", &Reply{Type: "text", Content: "😀\ue415\t\r\n"}, true},
		{"text with a media_id", &Reply{Type: "text", Content: "hi", MediaID: "m"}, false},
		{"image", &Reply{Type: "image", MediaID: "m"}, true},
		{"image without media", &Reply{Type: "image"}, false},
		{"voice", &Reply{Type: "voice", MediaID: "m"}, true},
		{"video", &Reply{Type: "video", MediaID: "m"}, true},
		{"video with title", &Reply{Type: "video", MediaID: "m", Title: "t", Description: "d"}, true},
		{"video without media", &Reply{Type: "video", Title: "t"}, false},
		{"music", &Reply{Type: "music", ThumbMediaID: "t", MusicURL: "http://x"}, true},
		{"music without thumb", &Reply{Type: "music", MusicURL: "http://x"}, false},
		{"news", &Reply{Type: "news", Articles: []Article{{Title: "t", URL: "http://x"}}}, true},
		{"news with 8", &Reply{Type: "news", Articles: eight}, true},
		{"news with 9", &Reply{Type: "news", Articles: append(eight, Article{Title: "t"})}, false},
		{"news without articles", &Reply{Type: "news"}, false},
		{"news article without title", &Reply{Type: "news", Articles: []Article{{URL: "http://x"}}}, false},
		{"news article with NUL", &Reply{Type: "news", Articles: []Article{{Title: "t", URL: "\x00"}}}, false},
		{"articles on text", &Reply{Type: "text", Content: "c", Articles: []Article{{Title: "t"}}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.reply.Validate()
			if tt.ok && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !tt.ok && !errors.Is(err, ErrBadReply) {
				t.Fatalf("err %v, want ErrBadReply", err)
			}
		})
	}
}

// The JSON form comes from RPC backends.
func TestReplyJSON(t *testing.T) {
	tests := map[string]Reply{
		`{"type":"text","content":"你好"}`:                                {Type: "text", Content: "你好"},
		`{"type":"image","media_id":"m"}`:                               {Type: "image", MediaID: "m"},
		`{"type":"video","media_id":"m","title":"t","description":"d"}`: {Type: "video", MediaID: "m", Title: "t", Description: "d"},
		`{"type":"music","title":"t","music_url":"u","hq_music_url":"h","thumb_media_id":"th"}`: {
			Type: "music", Title: "t", MusicURL: "u", HQMusicURL: "h", ThumbMediaID: "th"},
		`{"type":"news","articles":[{"title":"t","description":"d","pic_url":"p","url":"u"}]}`: {
			Type: "news", Articles: []Article{{Title: "t", Description: "d", PicURL: "p", URL: "u"}}},
	}
	for js, want := range tests {
		var got Reply
		if err := json.Unmarshal([]byte(js), &got); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%s decoded as %+v", js, got)
		}
		out, err := json.Marshal(got)
		if err != nil {
			t.Fatal(err)
		}
		if string(out) != js {
			t.Fatalf("%+v encoded as %s, want %s", got, out, js)
		}
	}
}
