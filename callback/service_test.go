package callback

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/100steps/wxappliance/appliance/logtest"
	"github.com/100steps/wxappliance/appliance/poll"
	"github.com/100steps/wxappliance/kv/kvtest"
)

var echoRules = Rules{
	Subscribe: &Reply{Type: ReplyText, Content: "welcome"},
	Keywords:  []Keyword{{Keyword: "ping", Match: MatchExact, Reply: Reply{Type: ReplyText, Content: "pong"}}},
}

func TestVerify(t *testing.T) {
	s := newTestService(t, Rules{}, nil)
	ts := testTimestamp()
	good := plainRequest(testToken, ts, "42")
	good.EchoStr = "echo 5918093750/+=?&<script>"
	tests := []struct {
		name string
		q    Query
		want error
	}{
		{"good", good, nil},
		{"wrong token", func() Query { q := plainRequest("other", ts, "42"); q.EchoStr = "e"; return q }(), ErrSignature},
		{"no signature", Query{Timestamp: ts, Nonce: "42", EchoStr: "e"}, ErrSignature},
		{"signature over another nonce", func() Query { q := good; q.Nonce = "43"; return q }(), ErrSignature},
		{"stale", func() Query {
			old := strconv.FormatInt(testNow.Add(-6*time.Minute).Unix(), 10)
			q := plainRequest(testToken, old, "42")
			q.EchoStr = "e"
			return q
		}(), ErrStale},
		{"no echostr", plainRequest(testToken, ts, "42"), ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			echo, err := s.Verify(tt.q)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err %v, want %v", err, tt.want)
			}
			if tt.want == nil && echo != tt.q.EchoStr {
				t.Fatalf("echo %q, want %q verbatim", echo, tt.q.EchoStr)
			}
			if tt.want != nil && echo != "" {
				t.Fatalf("echoed %q on error", echo)
			}
		})
	}
}

func TestHandleModes(t *testing.T) {
	ts := testTimestamp()
	msg := textXML("1001", "ping")
	tests := []struct {
		name      string
		build     func(t *testing.T) (Query, []byte)
		replyKey  string // "" for a plaintext reply
		wantReply string
	}{
		{"plaintext", func(t *testing.T) (Query, []byte) {
			return plainRequest(testToken, ts, "n1"), []byte(msg)
		}, "", "pong"},
		{"plaintext with encrypt_type=raw", func(t *testing.T) (Query, []byte) {
			q := plainRequest(testToken, ts, "n1")
			q.EncryptType = "raw"
			return q, []byte(msg)
		}, "", "pong"},
		{"compatible", func(t *testing.T) (Query, []byte) {
			return sealRequest(t, asCompatible, testKey, testAppID, msg, ts, "n2")
		}, testKey, "pong"},
		{"safe", func(t *testing.T) (Query, []byte) {
			return sealRequest(t, asSafe, testKey, testAppID, msg, ts, "n3")
		}, testKey, "pong"},
		{"Encrypt node without encrypt_type", func(t *testing.T) (Query, []byte) {
			q, body := sealRequest(t, asSafe, testKey, testAppID, msg, ts, "n4")
			q.EncryptType = ""
			return q, body
		}, testKey, "pong"},
		{"safe with the previous key is answered with it", func(t *testing.T) (Query, []byte) {
			return sealRequest(t, asSafe, testPrevKey, testAppID, msg, ts, "n5")
		}, testPrevKey, "pong"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mutate func(*Config)
			if tt.replyKey == "" {
				mutate = plaintextOnly // as an account in 明文模式 is set up
			}
			s := newTestService(t, echoRules, mutate)
			q, body := tt.build(t)
			ans, err := s.Handle(t.Context(), q, body)
			if err != nil {
				t.Fatal(err)
			}
			replyXML := ans.Body
			if tt.replyKey != "" {
				if strings.Contains(string(ans.Body), "pong") {
					t.Fatalf("encrypted-mode reply sent in clear: %s", ans.Body)
				}
				replyXML = openReply(t, ans.Body, tt.replyKey, testAppID)
			}
			if ans.ContentType() != "text/xml; charset=utf-8" {
				t.Fatalf("content type %s", ans.ContentType())
			}
			reply, err := ParseMessage(replyXML)
			if err != nil {
				t.Fatal(err)
			}
			if reply.Content != tt.wantReply || reply.ToUserName != testUser || reply.FromUserName != testAccount ||
				reply.MsgType != "text" || reply.CreateTime != testNow.Unix() {
				t.Fatalf("reply %+v", reply)
			}
		})
	}
}

// The official sample, compatible mode, through the whole service.
func TestHandleOfficialSample(t *testing.T) {
	sampleTime, _ := strconv.ParseInt(sampleTimestamp, 10, 64)
	d, err := NewDispatcher(Rules{Keywords: []Keyword{{Keyword: "abcdteT", Match: MatchExact, Reply: Reply{Type: ReplyText, Content: "ok"}}}})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(kvtest.Badger(t), d, Config{
		Token: sampleToken, AppID: sampleAppID, EncodingAESKey: sampleKey,
		Now: func() time.Time { return time.Unix(sampleTime, 0) },
	})
	if err != nil {
		t.Fatal(err)
	}
	q := Query{MsgSignature: sampleSignature, Timestamp: sampleTimestamp, Nonce: sampleNonce, EncryptType: "aes"}
	ans, err := s.Handle(t.Context(), q, []byte(sampleBody))
	if err != nil {
		t.Fatal(err)
	}
	f, err := parseFields(ans.Body)
	if err != nil {
		t.Fatal(err)
	}
	if !CheckSignature(text(f, "MsgSignature"), sampleToken, text(f, "TimeStamp"), text(f, "Nonce"), text(f, "Encrypt")) {
		t.Fatalf("reply signature: %s", ans.Body)
	}
	c, _ := NewCrypter(sampleKey, sampleAppID)
	plain, err := c.Decrypt(text(f, "Encrypt"))
	if err != nil {
		t.Fatal(err)
	}
	if r, _ := ParseMessage(plain); r.Content != "ok" || r.ToUserName != "oyORnuP8q7ou2gfYjqLzSIWZf0rs" {
		t.Fatalf("reply %s", plain)
	}
}

func TestHandleRejects(t *testing.T) {
	ts := testTimestamp()
	msg := textXML("2001", "ping")
	stale := strconv.FormatInt(testNow.Add(-5*time.Minute-time.Second).Unix(), 10)
	future := strconv.FormatInt(testNow.Add(5*time.Minute+time.Second).Unix(), 10)
	tests := []struct {
		name  string
		build func(t *testing.T) (Query, []byte)
		cfg   func(*Config)
		want  error
	}{
		{"plaintext, bad signature", func(t *testing.T) (Query, []byte) {
			return plainRequest("wrongtoken", ts, "n"), []byte(msg)
		}, nil, ErrSignature},
		{"plaintext, no signature", func(t *testing.T) (Query, []byte) {
			return Query{Timestamp: ts, Nonce: "n"}, []byte(msg)
		}, nil, ErrSignature},
		{"plaintext, stale", func(t *testing.T) (Query, []byte) {
			return plainRequest(testToken, stale, "n"), []byte(msg)
		}, nil, ErrStale},
		{"plaintext, from the future", func(t *testing.T) (Query, []byte) {
			return plainRequest(testToken, future, "n"), []byte(msg)
		}, nil, ErrStale},
		{"timestamp not a number", func(t *testing.T) (Query, []byte) {
			return plainRequest(testToken, "yesterday", "n"), []byte(msg)
		}, nil, ErrStale},
		{"timestamp absurd", func(t *testing.T) (Query, []byte) {
			return plainRequest(testToken, "-9223372036854775808", "n"), []byte(msg)
		}, nil, ErrStale},
		{"malformed XML", func(t *testing.T) (Query, []byte) {
			return plainRequest(testToken, ts, "n"), []byte("<xml><MsgType>text</xml>")
		}, nil, ErrMalformed},
		{"JSON body", func(t *testing.T) (Query, []byte) {
			return plainRequest(testToken, ts, "n"), []byte(`{"MsgType":"text"}`)
		}, nil, ErrMalformed},
		{"safe, signature instead of msg_signature", func(t *testing.T) (Query, []byte) {
			q, body := sealRequest(t, asSafe, testKey, testAppID, msg, ts, "n")
			q.MsgSignature = ""
			return q, body
		}, nil, ErrSignature},
		{"safe, msg_signature over another Encrypt", func(t *testing.T) (Query, []byte) {
			q, _ := sealRequest(t, asSafe, testKey, testAppID, msg, ts, "n")
			_, other := sealRequest(t, asSafe, testKey, testAppID, textXML("2002", "x"), ts, "n")
			return q, other
		}, nil, ErrSignature},
		{"safe, stale", func(t *testing.T) (Query, []byte) {
			return sealRequest(t, asSafe, testKey, testAppID, msg, stale, "n")
		}, nil, ErrStale},
		{"encrypt_type=aes without Encrypt", func(t *testing.T) (Query, []byte) {
			q := plainRequest(testToken, ts, "n")
			q.EncryptType = "aes"
			q.MsgSignature = Signature(testToken, ts, "n", "")
			return q, []byte(msg)
		}, nil, ErrMalformed},
		{"Encrypt not base64", func(t *testing.T) (Query, []byte) {
			enc := "not*base64!"
			q := Query{MsgSignature: Signature(testToken, ts, "n", enc), Timestamp: ts, Nonce: "n", EncryptType: "aes"}
			return q, []byte("<xml><Encrypt><![CDATA[" + enc + "]]></Encrypt></xml>")
		}, nil, ErrMalformed},
		{"Encrypt with a bad padding", func(t *testing.T) (Query, []byte) {
			enc := rawEncrypt(t, testKey, make([]byte, 64)) // pad value 0
			q := Query{MsgSignature: Signature(testToken, ts, "n", enc), Timestamp: ts, Nonce: "n", EncryptType: "aes"}
			return q, []byte("<xml><Encrypt><![CDATA[" + enc + "]]></Encrypt></xml>")
		}, nil, ErrDecrypt},
		{"another account's AppID", func(t *testing.T) (Query, []byte) {
			return sealRequest(t, asSafe, testKey, "wxsomeoneelse000", msg, ts, "n")
		}, nil, ErrAppID},
		{"a key we do not have", func(t *testing.T) (Query, []byte) {
			return sealRequest(t, asSafe, sampleKey, testAppID, msg, ts, "n")
		}, nil, ErrDecrypt},
		{"encrypted but no key configured", func(t *testing.T) (Query, []byte) {
			return sealRequest(t, asSafe, testKey, testAppID, msg, ts, "n")
		}, func(c *Config) { c.EncodingAESKey, c.PreviousEncodingAESKey = "", "" }, ErrNoKey},
		{"decrypted body malformed", func(t *testing.T) (Query, []byte) {
			return sealRequest(t, asSafe, testKey, testAppID, "<xml><Content>", ts, "n")
		}, nil, ErrMalformed},
		// What needs no body is checked before the body is looked at.
		{"plaintext, bad signature and a malformed body", func(t *testing.T) (Query, []byte) {
			return plainRequest("wrongtoken", ts, "n"), []byte("<xml><MsgType>text</xml>")
		}, plaintextOnly, ErrSignature},
		{"plaintext, stale and a malformed body", func(t *testing.T) (Query, []byte) {
			return plainRequest(testToken, stale, "n"), []byte("<xml><MsgType>text</xml>")
		}, plaintextOnly, ErrStale},
		{"safe, bad msg_signature and an envelope the parser would refuse", func(t *testing.T) (Query, []byte) {
			q, body := sealRequest(t, asSafe, testKey, testAppID, msg, ts, "n")
			q.MsgSignature = Signature("wrongtoken", ts, "n")
			return q, []byte(strings.Replace(string(body), "<Encrypt>", "<Junk>&nbsp;\x00</Junk><Encrypt>", 1))
		}, nil, ErrSignature},
		{"safe, two Encrypt elements, the first signed", func(t *testing.T) (Query, []byte) {
			q, body := sealRequest(t, asSafe, testKey, testAppID, msg, ts, "n")
			_, other := sealRequest(t, asSafe, testKey, testAppID, textXML("2002", "x"), ts, "n")
			second := other[strings.Index(string(other), "<Encrypt>"):strings.Index(string(other), "</xml>")]
			return q, []byte(strings.Replace(string(body), "</xml>", string(second)+"</xml>", 1))
		}, nil, ErrMalformed},
		{"safe, Encrypt not directly under the root", func(t *testing.T) (Query, []byte) {
			q, body := sealRequest(t, asSafe, testKey, testAppID, msg, ts, "n")
			b := strings.Replace(string(body), "<Encrypt>", "<A><Encrypt>", 1)
			return q, []byte(strings.Replace(b, "</Encrypt>", "</Encrypt></A>", 1))
		}, nil, ErrMalformed},
		{"plaintext with a key set, malformed body", func(t *testing.T) (Query, []byte) {
			return plainRequest(testToken, ts, "n"), []byte("<xml><MsgType>text</xml>")
		}, nil, ErrMalformed},
		{"plaintext with a key set, an Encrypt but no msg_signature", func(t *testing.T) (Query, []byte) {
			_, body := sealRequest(t, asSafe, testKey, testAppID, msg, ts, "n")
			return plainRequest(testToken, ts, "n"), body
		}, nil, ErrSignature},
		{"plaintext without a key, an Encrypt but no msg_signature", func(t *testing.T) (Query, []byte) {
			_, body := sealRequest(t, asSafe, testKey, testAppID, msg, ts, "n")
			return plainRequest(testToken, ts, "n"), body
		}, plaintextOnly, ErrSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var called atomic.Int32
			s := newTestService(t, Rules{}, tt.cfg)
			s.SetSubscriber(subscriberFunc(func(context.Context, *Message) (*Reply, bool, error) {
				called.Add(1)
				return nil, true, nil
			}))
			q, body := tt.build(t)
			ans, err := s.Handle(t.Context(), q, body)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err %v (answer %v), want %v", err, ans, tt.want)
			}
			if called.Load() != 0 {
				t.Fatal("a refused request was dispatched")
			}
		})
	}
}

func TestHandleWindowIsConfigurable(t *testing.T) {
	s := newTestService(t, echoRules, func(c *Config) { plaintextOnly(c); c.TimestampWindow = time.Hour })
	old := strconv.FormatInt(testNow.Add(-50*time.Minute).Unix(), 10)
	if _, err := s.Handle(t.Context(), plainRequest(testToken, old, "n"), []byte(textXML("1", "ping"))); err != nil {
		t.Fatalf("50 minutes inside a 1h window refused: %v", err)
	}
}

func TestDedupe(t *testing.T) {
	ts := testTimestamp()
	tests := []struct {
		name       string
		first      string
		retry      string
		encrypted  bool
		dispatches int32
	}{
		{"same MsgId", textXML("3001", "ping"), textXML("3001", "ping"), false, 1},
		{"same MsgId, safe mode", textXML("3002", "ping"), textXML("3002", "ping"), true, 1},
		{"same MsgId, other content (a replay can only repeat)", textXML("3003", "ping"), textXML("3003", "pong"), false, 1},
		{"other MsgId", textXML("3004", "ping"), textXML("3005", "ping"), false, 2},
		{"same event", eventXML("subscribe", 1700000000, ""), eventXML("subscribe", 1700000000, ""), false, 1},
		{"same event, safe mode", eventXML("subscribe", 1700000000, ""), eventXML("subscribe", 1700000000, ""), true, 1},
		{"event at another time", eventXML("LOCATION", 1700000000, ""), eventXML("LOCATION", 1700000005, ""), false, 2},
		{"other event at the same time", eventXML("subscribe", 1700000000, ""), eventXML("SCAN", 1700000000, ""), false, 2},
	}
	for storeName, newStore := range dedupeStores {
		for _, tt := range tests {
			t.Run(storeName+"/"+tt.name, func(t *testing.T) {
				var mutate func(*Config)
				if !tt.encrypted {
					mutate = plaintextOnly
				}
				s := newTestServiceOn(t, newStore(t), Rules{}, mutate)
				var n atomic.Int32
				s.SetSubscriber(subscriberFunc(func(_ context.Context, m *Message) (*Reply, bool, error) {
					k := n.Add(1)
					return &Reply{Type: ReplyText, Content: fmt.Sprintf("answer %d", k)}, true, nil
				}))
				send := func(xml, nonce string) []byte {
					var q Query
					var body []byte
					if tt.encrypted {
						q, body = sealRequest(t, asSafe, testKey, testAppID, xml, ts, nonce)
					} else {
						q, body = plainRequest(testToken, ts, nonce), []byte(xml)
					}
					ans, err := s.Handle(t.Context(), q, body)
					if err != nil {
						t.Fatal(err)
					}
					return ans.Body
				}
				a := send(tt.first, "1")
				b := send(tt.retry, "1") // WeChat's retry repeats the query string
				if got := n.Load(); got != tt.dispatches {
					t.Fatalf("dispatched %d times, want %d", got, tt.dispatches)
				}
				if tt.dispatches == 1 && string(a) != string(b) {
					t.Fatalf("retry got another answer:\n%s\n%s", a, b)
				}
				if tt.dispatches == 2 && string(a) == string(b) {
					t.Fatal("distinct messages got the same answer")
				}
			})
		}
	}
}

// Concurrent deliveries of one message (a retry while the first is still
// being answered) dispatch once and all get the first answer.
func TestDedupeConcurrent(t *testing.T) {
	for name, newStore := range dedupeStores {
		t.Run(name, func(t *testing.T) { testDedupeConcurrent(t, newStore(t)) })
	}
}

func testDedupeConcurrent(t *testing.T, st Store) {
	s := newTestServiceOn(t, st, Rules{}, nil)
	release := make(chan struct{})
	var n atomic.Int32
	s.SetSubscriber(subscriberFunc(func(context.Context, *Message) (*Reply, bool, error) {
		n.Add(1)
		<-release
		return &Reply{Type: ReplyText, Content: "slow but in time"}, true, nil
	}))
	q, body := sealRequest(t, asSafe, testKey, testAppID, textXML("4001", "x"), testTimestamp(), "1")
	const copies = 5
	answers := make([][]byte, copies)
	var wg sync.WaitGroup
	for i := range copies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ans, err := s.Handle(context.Background(), q, body)
			if err != nil {
				t.Error(err)
				return
			}
			answers[i] = ans.Body
		}()
	}
	// Release once one copy is being answered. The others either find its
	// claim and poll the store until it stores its answer, or come after
	// and find the answer at once; none may dispatch again.
	poll.Until(t, "one copy to be dispatched", func() bool { return n.Load() > 0 })
	close(release)
	wg.Wait()
	if n.Load() != 1 {
		t.Fatalf("dispatched %d times", n.Load())
	}
	for i := 1; i < copies; i++ {
		if string(answers[i]) != string(answers[0]) {
			t.Fatalf("copy %d answered differently:\n%s\n%s", i, answers[i], answers[0])
		}
	}
	if got := openReply(t, answers[0], testKey, testAppID); !strings.Contains(string(got), "slow but in time") {
		t.Fatalf("reply %s", got)
	}
}

// A slow subscriber cannot hold the answer past the deadline: WeChat gets
// "success" while the subscriber is still blocked, the late reply is
// dropped with a log line, and a retry gets "success" without dispatching.
func TestReplyDeadline(t *testing.T) {
	s := newTestService(t, echoRules, func(c *Config) { plaintextOnly(c); c.ReplyTimeout = 200 * time.Millisecond })
	release := make(chan struct{})
	returned := make(chan struct{})
	var n atomic.Int32
	var sawDeadline atomic.Bool
	s.SetSubscriber(subscriberFunc(func(ctx context.Context, _ *Message) (*Reply, bool, error) {
		defer close(returned)
		n.Add(1)
		<-release
		// The answer went out at the deadline; the context ends with it
		// (its own timer may fire a moment after the service's).
		_, has := ctx.Deadline()
		select {
		case <-ctx.Done():
			sawDeadline.Store(has)
		case <-time.After(2 * time.Second):
		}
		return &Reply{Type: ReplyText, Content: "too late"}, true, nil
	}))
	q := plainRequest(testToken, testTimestamp(), "1")
	body := []byte(textXML("5001", "ping"))

	ans, err := s.Handle(t.Context(), q, body)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-returned:
		t.Fatal("the subscriber returned before the answer; the test proves nothing")
	default:
	}
	if string(ans.Body) != Success || ans.ContentType() != "text/plain; charset=utf-8" {
		t.Fatalf("answer %q, want success", ans.Body)
	}

	close(release)
	<-returned
	if !sawDeadline.Load() {
		t.Fatal("the subscriber's context had no deadline, or it had not passed")
	}
	poll.Until(t, "the late reply to be dropped", func() bool { return strings.Contains(s.logs.String(), "dropped") })

	ans, err = s.Handle(t.Context(), q, body)
	if err != nil {
		t.Fatal(err)
	}
	if string(ans.Body) != Success || !ans.Duplicate || n.Load() != 1 {
		t.Fatalf("retry: %q duplicate=%v dispatches=%d", ans.Body, ans.Duplicate, n.Load())
	}
}

func TestSubscriberFailuresAnswerSuccess(t *testing.T) {
	tests := map[string]subscriberFunc{
		"panic": func(context.Context, *Message) (*Reply, bool, error) { panic("boom") },
		"error": func(context.Context, *Message) (*Reply, bool, error) { return nil, true, errors.New("down") },
		"invalid reply": func(context.Context, *Message) (*Reply, bool, error) {
			return &Reply{Type: ReplyText, Content: "bad \x00 byte"}, true, nil
		},
	}
	for name, sub := range tests {
		t.Run(name, func(t *testing.T) {
			s := newTestService(t, echoRules, plaintextOnly)
			s.SetSubscriber(sub)
			ans, err := s.Handle(t.Context(), plainRequest(testToken, testTimestamp(), "1"), []byte(textXML("6001", "ping")))
			if err != nil {
				t.Fatal(err)
			}
			if string(ans.Body) != Success {
				t.Fatalf("answer %q, want success", ans.Body)
			}
		})
	}
}

func TestNoReplyIsSuccess(t *testing.T) {
	s := newTestService(t, echoRules, plaintextOnly)
	for i, xml := range []string{textXML("7001", "no rule for this"), eventXML("unsubscribe", 1700000000, "")} {
		ans, err := s.Handle(t.Context(), plainRequest(testToken, testTimestamp(), strconv.Itoa(i)), []byte(xml))
		if err != nil {
			t.Fatal(err)
		}
		if string(ans.Body) != Success {
			t.Fatalf("%d: answer %q", i, ans.Body)
		}
	}
}

// Log lines carry type and ids, never what the user wrote.
func TestLogsNoContent(t *testing.T) {
	s := newTestService(t, echoRules, nil)
	q, body := sealRequest(t, asSafe, testKey, testAppID, textXML("8001", "secret-words-42"), testTimestamp(), "1")
	if _, err := s.Handle(t.Context(), q, body); err != nil {
		t.Fatal(err)
	}
	logs := s.logs.String()
	if !strings.Contains(logs, "msg_id=8001") || !strings.Contains(logs, "mode=safe") {
		t.Fatalf("log lacks ids: %s", logs)
	}
	for _, secret := range []string{"secret-words-42", testToken, testKey, testUser} {
		if strings.Contains(logs, secret) {
			t.Fatalf("log holds %q: %s", secret, logs)
		}
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	d, _ := NewDispatcher(Rules{})
	st := kvtest.Badger(t)
	for name, cfg := range map[string]Config{
		"no token": {AppID: testAppID},
		"bad key":  {Token: testToken, EncodingAESKey: "short"},
		"bad previous key": {Token: testToken, EncodingAESKey: testKey,
			PreviousEncodingAESKey: strings.Repeat("!", 43)},
	} {
		if _, err := New(st, d, cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := New(nil, d, Config{Token: testToken}); err == nil {
		t.Error("nil store accepted")
	}
}

// failingStore is a store that is down.
type failingStore struct{}

var errStoreDown = errors.New("store down")

func (failingStore) Get(context.Context, string) ([]byte, error) { return nil, errStoreDown }
func (failingStore) PutIfAbsent(context.Context, string, []byte, time.Duration) (bool, error) {
	return false, errStoreDown
}
func (failingStore) CompareAndSwap(context.Context, string, []byte, []byte, time.Duration) (bool, error) {
	return false, errStoreDown
}

// With the dedupe store down, messages are still answered: a possible
// double answer is better than none.
func TestStoreDownStillAnswers(t *testing.T) {
	d, _ := NewDispatcher(echoRules)
	logs := &logtest.Buffer{}
	s, err := New(failingStore{}, d, Config{
		Token: testToken, AppID: testAppID, Now: func() time.Time { return testNow },
		Logger: slog.New(slog.NewTextHandler(logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ans, err := s.Handle(t.Context(), plainRequest(testToken, testTimestamp(), "1"), []byte(textXML("1", "ping")))
	if err != nil {
		t.Fatal(err)
	}
	if m, _ := ParseMessage(ans.Body); m == nil || m.Content != "pong" {
		t.Fatalf("answer %s", ans.Body)
	}
	if !strings.Contains(logs.String(), "without dedupe") {
		t.Fatalf("store failure not logged: %s", logs)
	}
}

// WeChat hanging up before the answer must not lose the dedupe record: its
// retry is answered from the store, not dispatched again.
func TestHungUpRequestIsStillRemembered(t *testing.T) {
	for name, newStore := range dedupeStores {
		t.Run(name, func(t *testing.T) { testHungUpRequestIsStillRemembered(t, newStore(t)) })
	}
}

func testHungUpRequestIsStillRemembered(t *testing.T, st Store) {
	s := newTestServiceOn(t, st, Rules{}, plaintextOnly)
	var n atomic.Int32
	s.SetSubscriber(subscriberFunc(func(context.Context, *Message) (*Reply, bool, error) {
		n.Add(1)
		return &Reply{Type: ReplyText, Content: "once"}, true, nil
	}))
	q, body := plainRequest(testToken, testTimestamp(), "1"), []byte(textXML("11", "x"))
	gone, cancel := context.WithCancel(t.Context())
	cancel()
	first, err := s.Handle(gone, q, body)
	if err != nil {
		t.Fatal(err)
	}
	retry, err := s.Handle(t.Context(), q, body)
	if err != nil {
		t.Fatal(err)
	}
	if n.Load() != 1 || !retry.Duplicate || string(retry.Body) != string(first.Body) {
		t.Fatalf("dispatches %d, duplicate %v, bodies:\n%s\n%s", n.Load(), retry.Duplicate, first.Body, retry.Body)
	}
}

// plaintextOnly configures no EncodingAESKey, as for an account in 明文模式.
func plaintextOnly(c *Config) { c.EncodingAESKey, c.PreviousEncodingAESKey = "", "" }

// With a key configured WeChat always sends Encrypt; a plaintext push is
// refused because its signature does not cover the message.
func TestPlaintextRefusedWhenKeyConfigured(t *testing.T) {
	s := newTestService(t, echoRules, nil)
	_, err := s.Handle(t.Context(), plainRequest(testToken, testTimestamp(), "n"), []byte(textXML("4001", "ping")))
	if !errors.Is(err, ErrPlaintext) {
		t.Fatalf("err = %v, want ErrPlaintext", err)
	}
	// The URL verification is plaintext in every mode and still works.
	q := plainRequest(testToken, testTimestamp(), "n")
	q.EchoStr = "echo"
	if got, err := s.Verify(q); err != nil || got != "echo" {
		t.Fatalf("verify with a key set: %q %v", got, err)
	}
}

// In compatible mode only the encrypted copy counts: the plaintext one is
// not covered by msg_signature, so it is not even parsed, and an Encrypt
// in a user's text is text.
func TestHandleCompatibleIgnoresPlaintextCopy(t *testing.T) {
	s := newTestService(t, echoRules, nil)
	ts := testTimestamp()
	q, safe := sealRequest(t, asSafe, testKey, testAppID, textXML("2101", "ping"), ts, "n")
	enc := string(safe[strings.Index(string(safe), "<Encrypt>"):strings.Index(string(safe), "</xml>")])
	body := `<xml><ToUserName><![CDATA[gh_other]]></ToUserName><MsgType>text</MsgType>` +
		`<Content><![CDATA[<Encrypt><![CDATA[forged]]]]><![CDATA[></Encrypt>]]></Content><Label>&nbsp;</Label>` + enc + `</xml>`
	ans, err := s.Handle(t.Context(), q, []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	reply, err := ParseMessage(openReply(t, ans.Body, testKey, testAppID))
	if err != nil {
		t.Fatal(err)
	}
	if reply.Content != "pong" || reply.FromUserName != testAccount {
		t.Fatalf("reply %+v", reply)
	}
	if !strings.Contains(s.logs.String(), "mode=compatible") {
		t.Fatalf("mode not logged as compatible: %s", s.logs)
	}
}

// A message whose identity or typed fields are repeated or nested is
// ambiguous (which MsgId is it? whom to answer?): refused as malformed,
// never dispatched, never answered from another message's record.
func TestHandleRefusesAmbiguousFields(t *testing.T) {
	ts := testTimestamp()
	base := textXML("2201", "ping")
	dup := func(elem string) string { return strings.Replace(base, "</xml>", elem+"</xml>", 1) }
	tests := map[string]string{
		"two MsgId":                        dup("<MsgId>2202</MsgId>"),
		"two ToUserName":                   dup("<ToUserName><![CDATA[gh_other]]></ToUserName>"),
		"two FromUserName":                 dup("<FromUserName><![CDATA[oOTHER]]></FromUserName>"),
		"two MsgType":                      dup("<MsgType><![CDATA[event]]></MsgType>"),
		"two CreateTime":                   dup("<CreateTime>1</CreateTime>"),
		"two Content":                      dup("<Content><![CDATA[pong]]></Content>"),
		"two Event":                        eventXML("subscribe", 1700000000, "<Event><![CDATA[unsubscribe]]></Event>"),
		"FromUserName with an element":     strings.Replace(base, "<FromUserName><![CDATA["+testUser+"]]></FromUserName>", "<FromUserName><a>"+testUser+"</a></FromUserName>", 1),
		"MsgId and MsgID differ":           dup("<MsgID>2203</MsgID>"),
		"three MsgIds, an empty one first": strings.Replace(base, "<MsgId>", "<MsgId></MsgId><MsgId>1</MsgId><MsgId>", 1),
	}
	for name, xml := range tests {
		for _, encrypted := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s, encrypted %v", name, encrypted), func(t *testing.T) {
				var mutate func(*Config)
				if !encrypted {
					mutate = plaintextOnly
				}
				s := newTestService(t, echoRules, mutate)
				var n atomic.Int32
				s.SetSubscriber(subscriberFunc(func(context.Context, *Message) (*Reply, bool, error) {
					n.Add(1)
					return &Reply{Type: ReplyText, Content: "answer"}, true, nil
				}))
				send := func(xml string) (*Answer, error) {
					if encrypted {
						q, body := sealRequest(t, asSafe, testKey, testAppID, xml, ts, "n")
						return s.Handle(t.Context(), q, body)
					}
					return s.Handle(t.Context(), plainRequest(testToken, ts, "n"), []byte(xml))
				}
				// The well-formed message first, so a wrong dedupe would
				// answer the ambiguous one from its record.
				if _, err := send(base); err != nil {
					t.Fatal(err)
				}
				ans, err := send(xml)
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("err %v (answer %+v), want ErrMalformed", err, ans)
				}
				if n.Load() != 1 {
					t.Fatalf("dispatched %d times, want once (the well-formed message)", n.Load())
				}
			})
		}
	}
}

// Repetition that is not ambiguous keeps working: children repeated inside
// containers, an element Message does not read repeated at the top, and
// MsgId and MsgID together when they agree.
func TestHandleKeepsUnambiguousRepetition(t *testing.T) {
	tests := map[string]struct {
		xml   string
		check func(*Message) bool
	}{
		"pic_sysphoto items": {eventXML("pic_sysphoto", 1700000000, `<EventKey><![CDATA[6]]></EventKey><SendPicsInfo><Count>2</Count><PicList><item><PicMd5Sum><![CDATA[a]]></PicMd5Sum></item><item><PicMd5Sum><![CDATA[b]]></PicMd5Sum></item></PicList></SendPicsInfo>`),
			func(m *Message) bool {
				items, _ := m.Raw["SendPicsInfo"].(map[string]any)["PicList"].(map[string]any)["item"].([]any)
				return len(items) == 2 && m.EventKey == "6"
			}},
		"an unknown element repeated": {strings.Replace(textXML("2301", "ping"), "</xml>", "<Extra>a</Extra><Extra>b</Extra></xml>", 1),
			func(m *Message) bool { l, _ := m.Raw["Extra"].([]any); return len(l) == 2 && m.MsgID == "2301" }},
		"MsgId and MsgID agree": {strings.Replace(textXML("2302", "ping"), "</xml>", "<MsgID> 2302 </MsgID></xml>", 1),
			func(m *Message) bool { return m.MsgID == "2302" }},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			s := newTestService(t, echoRules, nil)
			got := make(chan *Message, 1)
			s.SetSubscriber(subscriberFunc(func(_ context.Context, m *Message) (*Reply, bool, error) {
				got <- m
				return nil, true, nil
			}))
			q, body := sealRequest(t, asSafe, testKey, testAppID, tt.xml, testTimestamp(), "n")
			if _, err := s.Handle(t.Context(), q, body); err != nil {
				t.Fatal(err)
			}
			if m := <-got; !tt.check(m) || m.FromUserName != testUser || m.ToUserName != testAccount {
				t.Fatalf("message %+v", m)
			}
		})
	}
}
