// Package callback implements WeChat's server push (消息推送) for an Official
// Account: URL verification, messages and events in plaintext, compatible
// and safe (AES) mode, passive replies, dedupe of WeChat's retries, and
// dispatch to an RPC subscriber or to configured rules.
//
// The package is plain Go with typed errors and no HTTP routing: a
// transport reads the query string and the body, calls Service.Verify or
// Service.Handle, writes the answer, and maps the errors below to its own
// statuses in one table (appliance/callback.go for HTTP). Keeping the
// protocol here means the sandbox and the benchmark drive exactly what
// WeChat drives, without a server.
package callback

import (
	"errors"
	"net/url"
)

// Errors a transport maps to answers. Every error Verify and Handle return
// wraps one of them, except failures of the store, which are internal.
var (
	// ErrSignature: signature or msg_signature missing or wrong.
	ErrSignature = errors.New("callback: bad signature")
	// ErrStale: the timestamp is not a number within the allowed window
	// of the server's clock.
	ErrStale = errors.New("callback: timestamp outside the allowed window")
	// ErrMalformed: the body is not the XML WeChat sends, base64 does not
	// decode, or a required parameter is missing.
	ErrMalformed = errors.New("callback: malformed request")
	// ErrDecrypt: the ciphertext decodes but does not decrypt to a valid
	// message (length, padding or inner length field), with any key.
	ErrDecrypt = errors.New("callback: cannot decrypt")
	// ErrAppID: the message decrypts but is addressed to another AppID.
	ErrAppID = errors.New("callback: appid mismatch")
	// ErrNoKey: an encrypted message arrived but no EncodingAESKey is
	// configured. A configuration problem, not bad input.
	ErrNoKey = errors.New("callback: encrypted message but no EncodingAESKey configured")
	// ErrPlaintext: a plaintext push arrived while an EncodingAESKey is
	// configured. With a key set WeChat is in compatible or safe mode and
	// always sends Encrypt; a plaintext signature does not cover the body,
	// so accepting one would let a captured signature carry any message.
	ErrPlaintext = errors.New("callback: plaintext push refused because an EncodingAESKey is configured")
)

// MaxBodyBytes is the largest request body a transport should accept. A
// real message is a few kilobytes; a MiB leaves room for any of them.
const MaxBodyBytes = 1 << 20

// Success is the body that tells WeChat "received, no reply": it stops the
// retries and shows the user nothing.
const Success = "success"

// Query holds the query string parameters WeChat sends with every push.
type Query struct {
	Signature    string // sha1 of sorted token, timestamp, nonce
	MsgSignature string // sha1 of sorted token, timestamp, nonce, Encrypt (encrypted messages)
	Timestamp    string // Unix seconds
	Nonce        string
	EchoStr      string // URL verification only
	EncryptType  string // "aes" in compatible and safe mode, "raw" or absent in plaintext mode
	OpenID       string // the sender, sent beside the body; informative only
}

// ParseQuery extracts WeChat's parameters from a decoded query string.
func ParseQuery(v url.Values) Query {
	return Query{
		Signature:    v.Get("signature"),
		MsgSignature: v.Get("msg_signature"),
		Timestamp:    v.Get("timestamp"),
		Nonce:        v.Get("nonce"),
		EchoStr:      v.Get("echostr"),
		EncryptType:  v.Get("encrypt_type"),
		OpenID:       v.Get("openid"),
	}
}

// Values is the inverse of ParseQuery, for clients such as the sandbox;
// empty fields are left out.
func (q Query) Values() url.Values {
	v := url.Values{}
	for name, val := range map[string]string{
		"signature":     q.Signature,
		"msg_signature": q.MsgSignature,
		"timestamp":     q.Timestamp,
		"nonce":         q.Nonce,
		"echostr":       q.EchoStr,
		"encrypt_type":  q.EncryptType,
		"openid":        q.OpenID,
	} {
		if val != "" {
			v.Set(name, val)
		}
	}
	return v
}
