package callback

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
)

func testRules() Rules {
	return Rules{
		Subscribe: &Reply{Type: ReplyText, Content: "welcome"},
		Keywords: []Keyword{
			{Keyword: "help", Match: MatchExact, Reply: Reply{Type: ReplyText, Content: "exact help"}},
			{Keyword: "价格", Match: MatchContains, Reply: Reply{Type: ReplyNews, Articles: []Article{{Title: "价目表", URL: "https://x/p"}}}},
			{Keyword: "HELP", Match: MatchContains, Reply: Reply{Type: ReplyText, Content: "contains help"}},
		},
		Default: &Reply{Type: ReplyText, Content: "default"},
	}
}

func TestRulesReply(t *testing.T) {
	rules := testRules()
	if err := rules.Validate(); err != nil {
		t.Fatal(err)
	}
	text := func(s string) *Message { return &Message{MsgType: TypeText, Content: s} }
	event := func(e, key string) *Message { return &Message{MsgType: TypeEvent, Event: e, EventKey: key} }
	tests := []struct {
		name string
		msg  *Message
		want string // Content of the reply, the first article's title for news, "" for none
	}{
		{"exact keyword", text("help"), "exact help"},
		{"exact ignores case and surrounding space", text("  Help\n"), "exact help"},
		{"contains, first match wins", text("need help now"), "contains help"},
		{"contains in Chinese", text("请问价格多少"), "价目表"},
		{"contains ignores case", text("HeLp me"), "contains help"},
		{"no keyword: default", text("hello"), "default"},
		{"voice recognition matches keywords", &Message{MsgType: TypeVoice, Recognition: "help"}, "exact help"},
		{"voice without recognition: default", &Message{MsgType: TypeVoice}, "default"},
		{"image: default", &Message{MsgType: TypeImage}, "default"},
		{"unknown type: default", &Message{MsgType: "miniprogrampage"}, "default"},
		{"subscribe", event("subscribe", ""), "welcome"},
		{"subscribe through QR", event("subscribe", "qrscene_1"), "welcome"},
		{"unsubscribe: nothing", event("unsubscribe", ""), ""},
		{"LOCATION: nothing, not the default", event("LOCATION", ""), ""},
		{"CLICK: nothing", event("CLICK", "help"), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := rules.Reply(tt.msg)
			got := ""
			if r != nil {
				got = r.Content
				if r.Type == ReplyNews {
					got = r.Articles[0].Title
				}
			}
			if got != tt.want {
				t.Fatalf("reply %q, want %q", got, tt.want)
			}
		})
	}
	if (&Rules{}).Reply(text("help")) != nil {
		t.Fatal("empty rules replied")
	}
}

func TestRulesValidate(t *testing.T) {
	tests := []struct {
		name  string
		rules Rules
		want  string
	}{
		{"bad subscribe", Rules{Subscribe: &Reply{Type: "text"}}, "subscribe"},
		{"bad default", Rules{Default: &Reply{Type: "gif"}}, "default"},
		{"empty keyword", Rules{Keywords: []Keyword{{Match: MatchExact, Reply: Reply{Type: "text", Content: "x"}}}}, "keywords[0]"},
		{"bad match", Rules{Keywords: []Keyword{{Keyword: "k", Match: "regex", Reply: Reply{Type: "text", Content: "x"}}}}, "keywords[0]"},
		{"bad keyword reply", Rules{Keywords: []Keyword{
			{Keyword: "k", Match: MatchExact, Reply: Reply{Type: "text", Content: "x"}},
			{Keyword: "k", Match: MatchExact, Reply: Reply{Type: "image"}},
		}}, "keywords[1]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.rules.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v, want one naming %s", err, tt.want)
			}
			if _, err := NewDispatcher(tt.rules); err == nil {
				t.Fatal("NewDispatcher accepted invalid rules")
			}
		})
	}
}

func TestDispatchOrder(t *testing.T) {
	d, err := NewDispatcher(testRules())
	if err != nil {
		t.Fatal(err)
	}
	msg := &Message{MsgType: TypeText, Content: "help"}
	ctx := context.Background()

	reply, src, err := d.Dispatch(ctx, msg)
	if err != nil || src != SourceRules || reply.Content != "exact help" {
		t.Fatalf("no subscriber: %+v %s %v", reply, src, err)
	}

	tests := []struct {
		name      string
		sub       subscriberFunc
		wantSrc   Source
		wantReply string // "" for nil
		wantErr   bool
	}{
		{"subscriber answers", func(context.Context, *Message) (*Reply, bool, error) {
			return &Reply{Type: ReplyText, Content: "from backend"}, true, nil
		}, SourceSubscriber, "from backend", false},
		{"nobody subscribed: rules", func(context.Context, *Message) (*Reply, bool, error) {
			return nil, false, nil
		}, SourceRules, "exact help", false},
		{"handled without reply: success, not rules", func(context.Context, *Message) (*Reply, bool, error) {
			return nil, true, nil
		}, SourceSubscriber, "", false},
		{"error: success, not rules", func(context.Context, *Message) (*Reply, bool, error) {
			return nil, true, errors.New("backend down")
		}, SourceSubscriber, "", true},
		{"unknown reply type", func(context.Context, *Message) (*Reply, bool, error) {
			return &Reply{Type: "sticker"}, true, nil
		}, SourceSubscriber, "", true},
		{"empty text reply", func(context.Context, *Message) (*Reply, bool, error) {
			return &Reply{Type: ReplyText}, true, nil
		}, SourceSubscriber, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d.SetSubscriber(tt.sub)
			defer d.SetSubscriber(nil)
			reply, src, err := d.Dispatch(ctx, msg)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err %v, want error %v", err, tt.wantErr)
			}
			if src != tt.wantSrc {
				t.Fatalf("source %s, want %s", src, tt.wantSrc)
			}
			got := ""
			if reply != nil {
				got = reply.Content
			}
			if got != tt.wantReply {
				t.Fatalf("reply %q, want %q", got, tt.wantReply)
			}
		})
	}

	// Removed again: back to the rules.
	if reply, src, _ := d.Dispatch(ctx, msg); src != SourceRules || reply.Content != "exact help" {
		t.Fatalf("after SetSubscriber(nil): %+v %s", reply, src)
	}
}

// matchingSubscriber is a subscriber that says which pushes it takes.
type matchingSubscriber struct {
	subscriberFunc
	types map[string]bool
}

func (m matchingSubscriber) Matches(msgType, _ string) bool { return m.types[msgType] }

// A subscriber that says it takes no push like this one is not asked: the
// rules answer on the request's goroutine. One that takes it, or cannot
// tell, is asked through the deadline's machinery.
func TestRulesOnlyWhenNoSubscriberMatches(t *testing.T) {
	var delivered atomic.Int32
	backend := subscriberFunc(func(context.Context, *Message) (*Reply, bool, error) {
		delivered.Add(1)
		return &Reply{Type: ReplyText, Content: "from backend"}, true, nil
	})
	tests := []struct {
		name      string
		sub       Subscriber
		want      string
		delivered int32
	}{
		{"no subscriber", nil, "exact help", 0},
		{"subscribed to other types", matchingSubscriber{backend, map[string]bool{TypeImage: true}}, "exact help", 0},
		{"subscribed to text", matchingSubscriber{backend, map[string]bool{TypeText: true}}, "from backend", 1},
		{"cannot tell", backend, "from backend", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			delivered.Store(0)
			s := newTestService(t, testRules(), plaintextOnly)
			if tt.sub != nil {
				s.SetSubscriber(tt.sub)
			}
			ans, err := s.Handle(t.Context(), plainRequest(testToken, testTimestamp(), "1"), []byte(textXML("77", "help")))
			if err != nil {
				t.Fatal(err)
			}
			m, err := ParseMessage(ans.Body)
			if err != nil || m.Content != tt.want || delivered.Load() != tt.delivered {
				t.Fatalf("answer %q (%v), %d deliveries; want %q, %d", m.Content, err, delivered.Load(), tt.want, tt.delivered)
			}
		})
	}
}
