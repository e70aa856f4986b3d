package callback

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"wxappliance/kv"
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

func (s *memStore) Put(_ context.Context, key string, value []byte, _ time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[key] = bytes.Clone(value)
	return nil
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
	ts := testTimestamp()
	f.Fuzz(func(t *testing.T, body []byte, encrypted bool) {
		q := plainRequest(testToken, ts, "1")
		if encrypted {
			q, body = sealRequest(t, asSafe, testKey, testAppID, string(body), ts, "1")
		}
		ans, err := services[encrypted].Handle(context.Background(), q, body)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrSignature) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if len(ans.Body) == 0 {
			t.Fatal("accepted message without an answer")
		}
	})
}
