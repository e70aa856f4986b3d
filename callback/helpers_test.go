package callback

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/100steps/wxappliance/appliance/logtest"
	"github.com/100steps/wxappliance/kv"
	"github.com/100steps/wxappliance/kv/kvtest"
)

// The official sample vector of WeChat's message encryption (the
// WXBizMsgCrypt samples; wechatpy's tests use the same values).
const (
	sampleToken     = "spamtest"
	sampleKey       = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
	sampleAppID     = "wx2c2769f8efd9abc2"
	sampleTimestamp = "1409735669"
	sampleNonce     = "1320562132"
	sampleSignature = "5d197aaffba7e9b25a30732f161a50dee96bd5fa"
	sampleEncrypt   = "hyzAe4OzmOMbd6TvGdIOO6uBmdJoD0Fk53REIHvxYtJlE2B655HuD0m8KUePWB3+LrPXo87wzQ1QLvbeUgmBM4x6F8PGHQHFVAFmOD2LdJF9FrXpbUAh0B5GIItb52sn896wVsMSHGuPE328HnRGBcrS7C41IzDWyWNlZkyyXwon8T332jisa+h6tEDYsVticbSnyU8dKOIbgU6ux5VTjg3yt+WGzjlpKn6NPhRjpA912xMezR4kw6KWwMrCVKSVCZciVGCgavjIQ6X8tCOp3yZbGpy0VxpAe+77TszTfRd5RJSVO/HTnifJpXgCSUdUue1v6h0EIBYYI1BD1DlD+C0CR8e6OewpusjZ4uBl9FyJvnhvQl+q5rv1ixrcpCumEPo5MJSgM9ehVsNPfUM669WuMyVWQLCzpu9GhglF2PE="
	// sampleBody is the compatible-mode body of the sample: plaintext
	// fields and Encrypt together.
	sampleBody = `<xml><ToUserName><![CDATA[gh_10f6c3c3ac5a]]></ToUserName><FromUserName><![CDATA[oyORnuP8q7ou2gfYjqLzSIWZf0rs]]></FromUserName><CreateTime>1409735668</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[abcdteT]]></Content><MsgId>6054768590064713728</MsgId><Encrypt><![CDATA[` + sampleEncrypt + `]]></Encrypt></xml>`
)

// Test account.
const (
	testToken   = "testtoken123"
	testAppID   = "wxtest0000000001"
	testKey     = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFG"
	testPrevKey = "PreviousKeyPreviousKeyPreviousKeyPrevious00"
	testAccount = "gh_test00000001"
	testUser    = "oTEST_user1"
)

// testNow is the frozen clock of service tests.
var testNow = time.Date(2025, 3, 1, 8, 0, 0, 0, time.UTC)

func testTimestamp() string { return strconv.FormatInt(testNow.Unix(), 10) }

// fixedRandom reads as an endless run of one byte, for reproducible
// ciphertexts and nonces.
type fixedRandom byte

func (r fixedRandom) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(r)
	}
	return len(p), nil
}

// subscriberFunc adapts a function to Subscriber.
type subscriberFunc func(ctx context.Context, msg *Message) (*Reply, bool, error)

func (f subscriberFunc) Deliver(ctx context.Context, msg *Message) (*Reply, bool, error) {
	return f(ctx, msg)
}

// testService is a Service on Badger with the test account, both keys, a
// frozen clock and fixed randomness.
type testService struct {
	*Service
	logs *logtest.Buffer
}

// dedupeStores are the two ways the appliance keeps dedupe records: in the
// store itself (kv.Store; what several instances on Redis share), and
// claims in memory with answers in a journal (LocalStore, on Badger).
var dedupeStores = map[string]func(t testing.TB) Store{
	"kv store": func(t testing.TB) Store { return kvtest.Badger(t) },
	"local":    func(t testing.TB) Store { return LocalStore(testJournal(t)) },
}

// testJournal is a fresh journal beside a fresh Badger store.
func testJournal(t testing.TB) *kv.Journal {
	t.Helper()
	j, err := kvtest.Badger(t).Journal("callback")
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func newTestService(t testing.TB, rules Rules, mutate func(*Config)) *testService {
	t.Helper()
	return newTestServiceOn(t, kvtest.Badger(t), rules, mutate)
}

// newTestServiceOn is newTestService with its dedupe records in st.
func newTestServiceOn(t testing.TB, st Store, rules Rules, mutate func(*Config)) *testService {
	t.Helper()
	d, err := NewDispatcher(rules)
	if err != nil {
		t.Fatal(err)
	}
	logs := &logtest.Buffer{}
	cfg := Config{
		Token:                  testToken,
		AppID:                  testAppID,
		EncodingAESKey:         testKey,
		PreviousEncodingAESKey: testPrevKey,
		Now:                    func() time.Time { return testNow },
		Random:                 fixedRandom(7),
		Logger:                 slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if mutate != nil {
		mutate(&cfg)
	}
	s, err := New(st, d, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &testService{Service: s, logs: logs}
}

// textXML is a user's text message as WeChat sends it.
func textXML(msgID, content string) string {
	return fmt.Sprintf(`<xml><ToUserName><![CDATA[%s]]></ToUserName><FromUserName><![CDATA[%s]]></FromUserName><CreateTime>%d</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[%s]]></Content><MsgId>%s</MsgId></xml>`,
		testAccount, testUser, testNow.Unix()-1, content, msgID)
}

// eventXML is an event; extra is inserted before </xml>.
func eventXML(event string, createTime int64, extra string) string {
	return fmt.Sprintf(`<xml><ToUserName><![CDATA[%s]]></ToUserName><FromUserName><![CDATA[%s]]></FromUserName><CreateTime>%d</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[%s]]></Event>%s</xml>`,
		testAccount, testUser, createTime, event, extra)
}

// plainRequest signs a plaintext-mode push.
func plainRequest(token, ts, nonce string) Query {
	return Query{Signature: Signature(token, ts, nonce), Timestamp: ts, Nonce: nonce, OpenID: testUser}
}

// Request modes for sealRequest.
const (
	asSafe       = "safe"
	asCompatible = "compatible"
)

// sealRequest builds an encrypted push of msg with key, as WeChat does in
// safe mode, or in compatible mode with the plaintext fields kept.
func sealRequest(t testing.TB, mode, key, appID, msg, ts, nonce string) (Query, []byte) {
	t.Helper()
	c, err := NewCrypter(key, appID)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := c.Encrypt(fixedRandom(3), []byte(msg))
	if err != nil {
		t.Fatal(err)
	}
	q := Query{
		Signature:    Signature(testToken, ts, nonce),
		MsgSignature: Signature(testToken, ts, nonce, enc),
		Timestamp:    ts,
		Nonce:        nonce,
		EncryptType:  "aes",
		OpenID:       testUser,
	}
	var body string
	if mode == asCompatible {
		body = strings.Replace(msg, "</xml>", "<Encrypt><![CDATA["+enc+"]]></Encrypt></xml>", 1)
	} else {
		body = "<xml><ToUserName><![CDATA[" + testAccount + "]]></ToUserName><Encrypt><![CDATA[" + enc + "]]></Encrypt></xml>"
	}
	return q, []byte(body)
}

// openReply checks an encrypted reply's envelope and signature and returns
// the reply inside, decrypted with key.
func openReply(t testing.TB, body []byte, key, appID string) []byte {
	t.Helper()
	f, err := parseFields(body)
	if err != nil {
		t.Fatalf("reply envelope: %v: %s", err, body)
	}
	enc, sig, ts, nonce := text(f, "Encrypt"), text(f, "MsgSignature"), text(f, "TimeStamp"), text(f, "Nonce")
	if enc == "" || sig == "" || ts == "" || nonce == "" {
		t.Fatalf("reply envelope lacks a field: %s", body)
	}
	if !CheckSignature(sig, testToken, ts, nonce, enc) {
		t.Fatalf("reply MsgSignature does not verify: %s", body)
	}
	c, err := NewCrypter(key, appID)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := c.Decrypt(enc)
	if err != nil {
		t.Fatalf("reply does not decrypt with the expected key: %v", err)
	}
	return plain
}

// rawEncrypt AES-256-CBC encrypts plain (a multiple of 16 bytes) with
// WeChat's key derivation but no framing or padding, to build hostile
// ciphertexts.
func rawEncrypt(t testing.TB, encodingAESKey string, plain []byte) string {
	t.Helper()
	key, err := base64.StdEncoding.DecodeString(encodingAESKey + "=")
	if err != nil {
		t.Fatal(err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]byte, len(plain))
	cipher.NewCBCEncrypter(block, key[:16]).CryptBlocks(out, plain)
	return base64.StdEncoding.EncodeToString(out)
}
