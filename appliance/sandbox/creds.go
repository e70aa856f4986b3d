package sandbox

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strings"
	"time"
)

// Credential kinds. Each has its own token prefix so a credential of one
// kind is never accepted as another, even before the payload is read.
const (
	kindApp     = "at" // cgi-bin/token
	kindStable  = "st" // cgi-bin/stable_token
	kindTicket  = "jt" // cgi-bin/ticket/getticket (jsapi and wx_card)
	kindUser    = "ut" // sns/oauth2 access_token
	kindRefresh = "rt" // sns/oauth2 refresh_token
)

// claims is the signed payload of every credential. Times are UnixNano so
// that credentials issued within the same second (or under a frozen test
// clock) are still ordered, which ExpireTokens and the five-minute overlap
// rely on.
type claims struct {
	Kind   string `json:"kind"`
	AppID  string `json:"appid"`
	OpenID string `json:"openid,omitempty"`
	Scope  string `json:"scope,omitempty"`
	Type   string `json:"type,omitempty"` // ticket type: jsapi or wx_card
	IAT    int64  `json:"iat"`
	Exp    int64  `json:"exp"`
	N      string `json:"n"` // random, so two credentials never collide
}

// signer makes and checks credentials with a key derived from the app's
// credentials: a sandbox with a different AppSecret rejects them, one with
// the same accepts them across restarts.
type signer struct {
	key []byte
}

func newSigner(appID, secret string) *signer {
	sum := sha256.Sum256([]byte("wxappliance sandbox credential key v1\x00" + appID + "\x00" + secret))
	return &signer{key: sum[:]}
}

var b64 = base64.RawURLEncoding

// prefix returns the token prefix of kind, e.g. "SBXat".
func prefix(kind string) string { return "SBX" + kind }

// sign returns the credential for c:
// "SBX" + kind + "." + base64url(JSON claims) + "." + base64url(HMAC-SHA256).
func (sg *signer) sign(c claims) string {
	payload, err := json.Marshal(c)
	if err != nil {
		panic("sandbox: encoding claims: " + err.Error())
	}
	head := prefix(c.Kind) + "." + b64.EncodeToString(payload)
	return head + "." + b64.EncodeToString(sg.mac(head))
}

func (sg *signer) mac(head string) []byte {
	m := hmac.New(sha256.New, sg.key)
	m.Write([]byte(head))
	return m.Sum(nil)
}

// parse checks tok's signature and that it is one of kinds, and returns its
// claims. It does not look at time: callers decide between 42001 and
// 40001 themselves.
func (sg *signer) parse(tok string, kinds ...string) (claims, bool) {
	var c claims
	if len(tok) > 1024 {
		return c, false
	}
	head, sig, ok := cutLast(tok, ".")
	if !ok {
		return c, false
	}
	pre, payload, ok := strings.Cut(head, ".")
	if !ok {
		return c, false
	}
	gotSig, err := b64.DecodeString(sig)
	if err != nil || !hmac.Equal(gotSig, sg.mac(head)) {
		return c, false
	}
	raw, err := b64.DecodeString(payload)
	if err != nil || json.Unmarshal(raw, &c) != nil {
		return c, false
	}
	if pre != prefix(c.Kind) {
		return c, false
	}
	for _, k := range kinds {
		if c.Kind == k {
			return c, true
		}
	}
	return c, false
}

func cutLast(s, sep string) (before, after string, ok bool) {
	i := strings.LastIndex(s, sep)
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+len(sep):], true
}

// nonce returns n random bytes as base64url.
func nonce(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return b64.EncodeToString(b)
}

// issue signs a new credential of c.Kind valid for ttl from now. Its iat is
// strictly greater than any issued before by this Sandbox and than the
// ExpireTokens cutoff. Callers hold s.mu.
func (s *Sandbox) issueLocked(c claims, ttl time.Duration) (string, claims) {
	now := s.now().UnixNano()
	iat := max(now, s.state.lastIssued+1, s.state.expiredUpTo+1)
	s.state.lastIssued = iat
	c.AppID = s.appID
	c.IAT = iat
	c.Exp = now + int64(ttl)
	c.N = nonce(9)
	return s.signer.sign(c), c
}

// check validates a credential presented to an endpoint and returns its
// claims and 0, or the errcode to answer: 40001 for anything not issued by
// this app (foreign, tampered, wrong kind, superseded for more than five
// minutes), 42001 for expired ones.
func (s *Sandbox) check(tok string, kinds ...string) (claims, int) {
	c, ok := s.signer.parse(tok, kinds...)
	if !ok || c.AppID != s.appID {
		return c, 40001
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return c, s.checkTimeLocked(c, s.now().UnixNano())
}

// checkTimeLocked applies expiry, ExpireTokens and the overlap rule to c.
func (s *Sandbox) checkTimeLocked(c claims, now int64) int {
	if now >= c.Exp {
		return 42001
	}
	if c.Kind != kindRefresh && c.IAT <= s.state.expiredUpTo {
		return 42001
	}
	// WeChat keeps the previous app token working for five minutes after a
	// new one is issued, so that a central control server can roll tokens
	// out without failing calls in flight. Older ones are "not latest".
	var current int64
	switch c.Kind {
	case kindApp:
		current = s.state.appCurrent
	case kindStable:
		current = s.state.stableCurrent
	}
	if c.IAT < current && now > current+int64(tokenOverlap) {
		return 40001
	}
	return 0
}

// ExpireTokens makes every app token, stable token, jsapi ticket and user
// (sns) access token issued so far answer 42001, as if their lifetime had
// run out; refresh tokens stay valid. Credentials issued afterwards work.
func (s *Sandbox) ExpireTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.state.expiredUpTo = max(s.now().UnixNano(), s.state.lastIssued)
	s.state.stableToken = ""
	clear(s.state.tickets)
	s.log.Info("sandbox: all tokens expired")
}
