package oauth

import (
	"errors"
	"fmt"
)

// Sentinel errors of upstream calls. Transports map them to their wire form
// (the HTTP envelope, JSON-RPC error objects); their text is for logs only.
var (
	// ErrTimeout means WeChat did not answer within the call's deadline.
	ErrTimeout = errors.New("wechat: no answer within the deadline")
	// ErrUnavailable means no configured WeChat host could be reached or
	// every one answered a server error.
	ErrUnavailable = errors.New("wechat: unavailable")
	// ErrBadResponse means WeChat answered something that is not the
	// documented shape (malformed JSON, an unexpected status).
	ErrBadResponse = errors.New("wechat: malformed response")
)

// Error codes WeChat documents and the appliance acts on.
const (
	CodeBusy             = -1    // system busy: retry once later
	CodeInvalidToken     = 40001 // invalid credential or not the latest token
	CodeInvalidTokenAlt  = 40014 // invalid access_token
	CodeExpiredToken     = 42001 // access_token expired
	CodeInvalidCode      = 40029 // oauth code unknown or expired
	CodeCodeUsed         = 40163 // oauth code already exchanged
	CodeInvalidRefresh   = 40030 // invalid refresh_token
	CodeRefreshExpired   = 42002 // refresh_token expired
	CodeInvalidOpenID    = 40003
	CodeInvalidMediaID   = 40007
	CodeQuota            = 45009 // daily quota reached: never retried
	CodeScopeUnauthorize = 48001 // api unauthorized (e.g. snsapi_base asking for userinfo)
	CodeOutOfWindow      = 45015 // customer service message outside the 48 hours after the user's message
	CodeCustomQuota      = 45047 // customer service messages to this user used up
)

// APIError is a non-zero errcode answered by WeChat.
type APIError struct {
	Code int
	Msg  string
	Path string // API path without host or query, e.g. "cgi-bin/user/info"
}

func (e *APIError) Error() string {
	return fmt.Sprintf("wechat %s: errcode %d: %s", e.Path, e.Code, e.Msg)
}

// HasCode reports whether err is an *APIError with one of codes.
func HasCode(err error, codes ...int) bool {
	var apiErr *APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	for _, c := range codes {
		if apiErr.Code == c {
			return true
		}
	}
	return false
}

// IsTokenRejected reports whether WeChat rejected the access token used for
// the call, which is the signal to refresh it and retry once.
func IsTokenRejected(err error) bool {
	return HasCode(err, CodeInvalidToken, CodeInvalidTokenAlt, CodeExpiredToken)
}
