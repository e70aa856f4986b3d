package callback

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"
)

// lateRecorder is a LateSender that records what it was asked to send.
type lateRecorder struct {
	mu   sync.Mutex
	sent []string // openid and reply content
	done chan struct{}
	err  error
}

func newLateRecorder() *lateRecorder { return &lateRecorder{done: make(chan struct{}, 16)} }

func (l *lateRecorder) SendLate(_ context.Context, msg *Message, reply *Reply) error {
	l.mu.Lock()
	l.sent = append(l.sent, msg.FromUserName+":"+reply.Content)
	l.mu.Unlock()
	l.done <- struct{}{}
	return l.err
}

func (l *lateRecorder) wait(t *testing.T) {
	t.Helper()
	select {
	case <-l.done:
	case <-time.After(30 * time.Second):
		t.Fatal("the late reply was never sent")
	}
}

func (l *lateRecorder) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.sent...)
}

// A subscriber answering after the reply deadline: WeChat gets "success"
// at once, and the reply reaches the user as a customer service message,
// once.
func TestLateReplySentAsCustomMessage(t *testing.T) {
	late := newLateRecorder()
	s := newTestService(t, Rules{}, func(c *Config) { c.ReplyTimeout = 50 * time.Millisecond; c.Late = late })
	release := make(chan struct{})
	s.SetSubscriber(subscriberFunc(func(ctx context.Context, _ *Message) (*Reply, bool, error) {
		<-release // past the reply deadline, within the late window
		return &Reply{Type: "text", Content: "来晚了"}, true, nil
	}))
	qq, body := sealRequest(t, asSafe, testKey, testAppID, textXML("7001", "慢"), testTimestamp(), "1")
	ans, err := s.Handle(t.Context(), qq, body)
	if err != nil || string(ans.Body) != Success {
		t.Fatalf("WeChat got %v %v, want success at the deadline", ans, err)
	}
	close(release)
	late.wait(t)
	// WeChat's retry of the same message: the stored "success", no second
	// dispatch, no second late reply.
	if again, err := s.Handle(t.Context(), qq, body); err != nil || !again.Duplicate {
		t.Fatalf("retry: %+v %v", again, err)
	}
	if got := late.all(); len(got) != 1 || got[0] != testUser+":来晚了" {
		t.Fatalf("late replies %v, want one to %s", got, testUser)
	}
}

// A late reply is sent once per message, whoever dispatched it: a second
// process re-dispatching the message after a crash (or another instance)
// finds the record and does not send it again.
func TestLateReplyNeverTwice(t *testing.T) {
	late := newLateRecorder()
	a := newTestService(t, Rules{}, func(c *Config) { c.ReplyTimeout = 50 * time.Millisecond; c.Late = late })
	m, err := ParseMessage([]byte(textXML("7002", "x")))
	if err != nil {
		t.Fatal(err)
	}
	// Two dispatches of one message finish late, as after a takeover.
	for range 2 {
		a.lateReply(t.Context(), m, &Reply{Type: "text", Content: "once"}, SourceSubscriber, nil)
	}
	if got := late.all(); len(got) != 1 {
		t.Fatalf("sent %d times, want once", len(got))
	}
	// Failures and empty answers send nothing.
	other, _ := ParseMessage([]byte(textXML("7003", "y")))
	a.lateReply(t.Context(), other, nil, SourceSubscriber, nil)
	a.lateReply(t.Context(), other, nil, SourceSubscriber, errors.New("backend failed"))
	if got := late.all(); len(got) != 1 {
		t.Fatalf("sent %v after a failure and an empty answer", got)
	}
}

// Without a LateSender (callback.late_reply = "drop") the subscriber has
// only the reply deadline, and nothing is sent.
func TestLateReplyDropped(t *testing.T) {
	s := newTestService(t, Rules{}, func(c *Config) { c.ReplyTimeout = 50 * time.Millisecond })
	deadlineSeen := make(chan time.Duration, 1)
	s.SetSubscriber(subscriberFunc(func(ctx context.Context, _ *Message) (*Reply, bool, error) {
		d, _ := ctx.Deadline()
		deadlineSeen <- time.Until(d)
		<-ctx.Done()
		return nil, true, ctx.Err()
	}))
	q, body := sealRequest(t, asSafe, testKey, testAppID, textXML("7004", "x"), testTimestamp(), "1")
	if _, err := s.Handle(t.Context(), q, body); err != nil {
		t.Fatal(err)
	}
	if d := <-deadlineSeen; d > DefaultLateWindow/2 {
		t.Fatalf("the subscriber was given %v without a late sender", d)
	}
}

func TestCustomMessage(t *testing.T) {
	for _, tt := range []struct {
		reply Reply
		want  string
	}{
		{Reply{Type: "text", Content: "<b>你好</b> & 再见"}, `{"msgtype":"text","text":{"content":"<b>你好</b> & 再见"},"touser":"oU"}`},
		{Reply{Type: "image", MediaID: "M"}, `{"image":{"media_id":"M"},"msgtype":"image","touser":"oU"}`},
		{Reply{Type: "voice", MediaID: "M"}, `{"msgtype":"voice","touser":"oU","voice":{"media_id":"M"}}`},
		{Reply{Type: "video", MediaID: "M", Title: "T", Description: "D"}, `{"msgtype":"video","touser":"oU","video":{"description":"D","media_id":"M","thumb_media_id":"","title":"T"}}`},
		{Reply{Type: "music", Title: "T", MusicURL: "http://a/1.mp3", HQMusicURL: "http://a/2.mp3", ThumbMediaID: "TM"},
			`{"msgtype":"music","music":{"description":"","hqmusicurl":"http://a/2.mp3","musicurl":"http://a/1.mp3","thumb_media_id":"TM","title":"T"},"touser":"oU"}`},
		{Reply{Type: "news", Articles: []Article{{Title: "T", URL: "https://a/?x=1&y=2", PicURL: "https://a/p.jpg"}}},
			`{"msgtype":"news","news":{"articles":[{"description":"","picurl":"https://a/p.jpg","title":"T","url":"https://a/?x=1&y=2"}]},"touser":"oU"}`},
	} {
		t.Run(tt.reply.Type, func(t *testing.T) {
			got, err := tt.reply.CustomMessage("oU")
			if err != nil || string(got) != tt.want {
				t.Fatalf("%s %v\nwant %s", got, err, tt.want)
			}
			if !json.Valid(got) {
				t.Fatal("invalid JSON")
			}
		})
	}
	if _, err := (&Reply{Type: "text"}).CustomMessage("oU"); !errors.Is(err, ErrBadReply) {
		t.Fatalf("invalid reply: %v", err)
	}
}
