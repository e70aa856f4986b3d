package callback

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/100steps/wxappliance/kv"
)

// Seed corpora live in testdata/fuzz/<FuzzName>/; .ci/fuzz runs every
// target briefly.

// memStore is a Store in a map, for fuzzing and benchmarks, where the
// storage is not what is tested and Badger's files would only slow the
// loop. Expiry is ignored.
type memStore struct {
	mu sync.Mutex
	m  map[string][]byte
}

func newMemStore() *memStore { return &memStore{m: map[string][]byte{}} }

func (s *memStore) Get(_ context.Context, key string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[key]
	if !ok {
		return nil, kv.ErrNotFound
	}
	return bytes.Clone(v), nil
}

func (s *memStore) CompareAndSwap(_ context.Context, key string, old, value []byte, _ time.Duration) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur, ok := s.m[key]; !ok || !bytes.Equal(cur, old) {
		return false, nil
	}
	s.m[key] = bytes.Clone(value)
	return true, nil
}

func (s *memStore) PutIfAbsent(_ context.Context, key string, value []byte, _ time.Duration) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[key]; ok {
		return false, nil
	}
	s.m[key] = bytes.Clone(value)
	return true, nil
}

func FuzzParseMessage(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseMessage(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if m.Raw == nil {
			t.Fatal("parsed message without Raw")
		}
		// What Message reads is unambiguous: Raw agrees with it.
		checkTypedAgree(t, m)
		// Whatever parses must travel to RPC backends.
		if _, err := json.Marshal(m); err != nil {
			t.Fatalf("message does not encode as JSON: %v", err)
		}
		// A parsed message's reply renders to XML that parses again.
		var buf bytes.Buffer
		renderReply(&buf, &Reply{Type: ReplyText, Content: "x"}, m, 1)
		if _, err := parseFields(buf.Bytes()); err != nil {
			t.Fatalf("reply to a parsed message is not valid XML: %v\n%s", err, buf.Bytes())
		}
	})
}

// FuzzDecrypt feeds the decrypter two ways: raw is the plaintext that
// comes out of AES (so the fuzzer explores the padding, length field and
// AppID checks), or, when asBase64 is set, the Encrypt string itself.
func FuzzDecrypt(f *testing.F) {
	c, err := NewCrypter(testKey, testAppID)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw []byte, asBase64 bool) {
		var enc string
		if asBase64 {
			enc = string(raw)
		} else {
			if len(raw) == 0 || len(raw)%32 != 0 {
				raw = append(raw, make([]byte, 32-len(raw)%32)...)
			}
			enc = rawEncrypt(t, testKey, raw)
		}
		msg, err := c.Decrypt(enc)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrDecrypt) && !errors.Is(err, ErrAppID) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if len(msg) > len(enc) {
			t.Fatalf("%d-byte message out of a %d-byte ciphertext", len(msg), len(enc))
		}
		again, err := c.Encrypt(fixedRandom(0), msg)
		if err != nil {
			t.Fatal(err)
		}
		if back, err := c.Decrypt(again); err != nil || !bytes.Equal(back, msg) {
			t.Fatalf("round trip of a decrypted message: %q, %v", back, err)
		}
	})
}

func FuzzCheckSignature(f *testing.F) {
	f.Fuzz(func(t *testing.T, sig, token, timestamp, nonce, encrypt string) {
		parts := []string{token, timestamp, nonce, encrypt}
		want := Signature(parts...)
		if got := CheckSignature(sig, parts...); got != (strings.ToLower(sig) == want) {
			t.Fatalf("CheckSignature(%q) = %v, want %v (signature %s)", sig, got, !got, want)
		}
		if !CheckSignature(want, encrypt, nonce, timestamp, token) {
			t.Fatal("signature depends on the order of its parts")
		}
		if !CheckSignature(want, parts...) {
			t.Fatal("own signature refused")
		}
	})
}

// checkTypedAgree fails unless every typed field m was read from is, in
// Raw, absent or a single text, as refusing repeated fields promises.
func checkTypedAgree(t *testing.T, m *Message) {
	t.Helper()
	for _, name := range typedFields {
		switch m.Raw[name].(type) {
		case nil, string:
		default:
			t.Fatalf("accepted a message whose %s is %#v", name, m.Raw[name])
		}
	}
	if id, ok := m.Raw["MsgId"].(string); ok && strings.TrimSpace(id) != m.MsgID {
		t.Fatalf("MsgID %q, Raw MsgId %q", m.MsgID, id)
	}
	if from, _ := m.Raw["FromUserName"].(string); strings.TrimSpace(from) != m.FromUserName {
		t.Fatalf("FromUserName %q, Raw %q", m.FromUserName, from)
	}
}

// encPlaceholder in FuzzEnvelope's input stands for the signed Encrypt
// value, so that the fuzzer builds envelopes around a genuine one.
const encPlaceholder = "$ENC"

// FuzzEnvelope checks the cheap Encrypt extraction two ways. Against the
// XML parser: when both accept a body, they agree on whether it has a
// top-level Encrypt and on its value, so the scan cannot be made to verify
// one value while a parser would see another. Through the service: with
// msg_signature over a genuine Encrypt value, whatever surrounds it, a
// request is refused with a typed error or answers exactly that message.
func FuzzEnvelope(f *testing.F) {
	d, err := NewDispatcher(Rules{})
	if err != nil {
		f.Fatal(err)
	}
	s, err := New(newMemStore(), d, Config{
		Token: testToken, AppID: testAppID, EncodingAESKey: testKey,
		Now: func() time.Time { return testNow }, Random: fixedRandom(1),
	})
	if err != nil {
		f.Fatal(err)
	}
	var got atomic.Pointer[Message]
	s.SetSubscriber(subscriberFunc(func(_ context.Context, m *Message) (*Reply, bool, error) {
		got.Store(m)
		return nil, true, nil
	}))
	c, err := NewCrypter(testKey, testAppID)
	if err != nil {
		f.Fatal(err)
	}
	ts := testTimestamp()
	var n atomic.Int64
	f.Fuzz(func(t *testing.T, outer []byte) {
		// A fresh MsgId each time, so the message is dispatched, not
		// answered from the dedupe store.
		id := strconv.FormatInt(n.Add(1), 10)
		enc, err := c.Encrypt(fixedRandom(2), []byte(textXML(id, "x")))
		if err != nil {
			t.Fatal(err)
		}
		body := bytes.ReplaceAll(outer, []byte(encPlaceholder), []byte(enc))

		env, scanErr := scanEnvelope(body)
		if scanErr != nil && !errors.Is(scanErr, ErrMalformed) {
			t.Fatalf("untyped error %v", scanErr)
		}
		fields, parseErr := parseFields(body)
		if scanErr == nil && parseErr == nil {
			node, has := fields["Encrypt"]
			if has != env.hasEncrypt {
				t.Fatalf("scan says Encrypt %v, parser %v", env.hasEncrypt, has)
			}
			value, isText := node.(string)
			if has && !isText {
				t.Fatalf("scan accepted an Encrypt the parser reads as %#v", node)
			}
			// encoding/xml turns \r\n into \n; WeChat sends neither.
			if has && !strings.Contains(env.encrypt, "\r") && strings.TrimSpace(value) != env.encrypt {
				t.Fatalf("scan read Encrypt %q, parser %q", env.encrypt, value)
			}
		}

		got.Store(nil)
		q := Query{MsgSignature: Signature(testToken, ts, "1", enc), Timestamp: ts, Nonce: "1", EncryptType: "aes"}
		ans, err := s.Handle(context.Background(), q, body)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrSignature) {
				t.Fatalf("unexpected error %v", err)
			}
			if got.Load() != nil {
				t.Fatal("a refused request was dispatched")
			}
			return
		}
		if scanErr != nil || env.encrypt != enc {
			t.Fatalf("accepted although the scan gave %q, %v", env.encrypt, scanErr)
		}
		if m := got.Load(); m == nil || m.MsgID != id || string(ans.Body) != Success {
			t.Fatalf("answered %q after dispatching %+v, want message %s", ans.Body, m, id)
		}
	})
}

// FuzzHandle drives the whole service with a correctly signed request
// around any body: plaintext as it is, or in safe mode with body as the
// encrypted message. Nothing may panic, every error must be typed, and a
// message that is accepted gets an answer.
func FuzzHandle(f *testing.F) {
	// Plaintext bodies go to an account in 明文模式 (no key), encrypted
	// ones to an account with a key, as WeChat would send them.
	services := map[bool]*Service{}
	for _, encrypted := range []bool{false, true} {
		d, err := NewDispatcher(echoRules)
		if err != nil {
			f.Fatal(err)
		}
		cfg := Config{Token: testToken, AppID: testAppID, Now: func() time.Time { return testNow }, Random: fixedRandom(1)}
		if encrypted {
			cfg.EncodingAESKey = testKey
		}
		if services[encrypted], err = New(newMemStore(), d, cfg); err != nil {
			f.Fatal(err)
		}
	}
	// What the dispatcher saw, to check it is never ambiguous.
	var got atomic.Pointer[Message]
	for _, s := range services {
		s.SetSubscriber(subscriberFunc(func(_ context.Context, m *Message) (*Reply, bool, error) {
			got.Store(m)
			return nil, false, nil // on to the rules
		}))
	}
	ts := testTimestamp()
	f.Fuzz(func(t *testing.T, body []byte, encrypted bool) {
		got.Store(nil)
		q := plainRequest(testToken, ts, "1")
		if encrypted {
			q, body = sealRequest(t, asSafe, testKey, testAppID, string(body), ts, "1")
		}
		ans, err := services[encrypted].Handle(context.Background(), q, body)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrSignature) {
				t.Fatalf("unexpected error %v", err)
			}
			if got.Load() != nil {
				t.Fatal("a refused request was dispatched")
			}
			return
		}
		if len(ans.Body) == 0 {
			t.Fatal("accepted message without an answer")
		}
		if m := got.Load(); m != nil {
			checkTypedAgree(t, m)
		}
	})
}

// FuzzScanFields checks the fast XML path against encoding/xml: whatever
// scanFields accepts, decodeFields accepts too and reads the same fields.
func FuzzScanFields(f *testing.F) {
	for _, seed := range []string{
		textXML("1", "ping"),
		eventXML("subscribe", 1700000000, "qrscene_1"),
		"<xml><a>1</a><a>2</a><b><c>x</c> t </b><d/><e></e></xml>",
		"<xml> <![CDATA[x]]> <A.b-c_1>y</A.b-c_1></xml>\n",
		"<xml>\u4f60\u597d<![CDATA[]]]]><![CDATA[>]]></xml>",
		"<xml><a>x&amp;y</a></xml>",
		"<xml><a b=\"1\">x</a></xml>",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fast, ok := scanFields(data)
		slow, err := decodeFields(data)
		if !ok {
			return
		}
		if err != nil {
			t.Fatalf("scanFields accepted what encoding/xml refuses (%v): %q", err, data)
		}
		if !reflect.DeepEqual(fast, slow) {
			t.Fatalf("fields differ for %q:\nscan   %#v\ndecode %#v", data, fast, slow)
		}
	})
}
