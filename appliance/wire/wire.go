// Package wire is what the appliance's two transports, HTTP for browsers
// and JSON-RPC for backends, share about their wire: the one classification
// of service errors into a kind and a message a caller may see, the bearer
// token of a request, and WeChat's JSON objects passed through unchanged.
//
// Each transport projects a Kind onto its own form (an HTTP status and the
// {"status","msg","data"} envelope; a JSON-RPC code and data), so adding an
// error is a change to the table here and nowhere else.
package wire

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/100steps/wxappliance/oauth"
)

// Kind is a class of failure both transports answer the same way.
type Kind uint8

const (
	// Internal is a bug or a storage failure; the details go to the log only.
	Internal Kind = iota
	// Invalid means the request itself is malformed: a parameter missing,
	// of the wrong type or shape.
	Invalid
	// BadInput means a well-formed value was refused by a service or by
	// WeChat, e.g. an unknown media_id.
	BadInput
	// NotLoggedIn means no session, an expired or used login, or a login
	// without the scope the call needs.
	NotLoggedIn
	// Forbidden means the caller may not have what it asked for: the user
	// does not follow the account, a signature is wrong.
	Forbidden
	// NotFound means there is no such route or method.
	NotFound
	// TooLarge means a body or a media file is over its limit.
	TooLarge
	// TooManyRequests means this caller sent more than its share; it may
	// retry after a while.
	TooManyRequests
	// Busy means the appliance will not take the request now; the same
	// request may succeed later.
	Busy
	// Timeout means WeChat did not answer in time, could not be reached or
	// answered something unreadable.
	Timeout
	// WeChat means WeChat answered an errcode that has no row of its own;
	// the errcode goes to backends and to the log.
	WeChat
)

var statuses = [...]int{
	Internal:        http.StatusInternalServerError,
	Invalid:         http.StatusBadRequest,
	BadInput:        http.StatusBadRequest,
	NotLoggedIn:     http.StatusUnauthorized,
	Forbidden:       http.StatusForbidden,
	NotFound:        http.StatusNotFound,
	TooLarge:        http.StatusRequestEntityTooLarge,
	TooManyRequests: http.StatusTooManyRequests,
	Busy:            http.StatusServiceUnavailable,
	Timeout:         http.StatusGatewayTimeout,
	// The service this one replaces answered every server-side failure
	// with 500, and frontends know only 400, 401, 403, 500 and 504.
	WeChat: http.StatusInternalServerError,
}

// Status is the HTTP status of k, which the RPC transport repeats in its
// error data so a backend sees what a browser would.
func (k Kind) Status() int { return statuses[k] }

// Error is an error whose kind and message a handler chose itself and may
// be shown to the caller; Err is the cause, for the log.
type Error struct {
	Kind Kind
	Msg  string
	// Hint, when set, tells a developer what to check; it goes beside the
	// message, which callers may compare against and so stays as it is.
	Hint string
	Err  error
}

func (e *Error) Error() string {
	if e.Err == nil {
		return e.Msg
	}
	return e.Msg + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error of kind with msg shown to the caller and err
// kept for the log.
func Errorf(kind Kind, msg string, err error) error {
	return &Error{Kind: kind, Msg: msg, Err: err}
}

// BearerToken returns the token of an "Authorization: Bearer <token>"
// header (the scheme in any case), or false.
func BearerToken(r *http.Request) (string, bool) {
	scheme, token, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	token = strings.TrimSpace(token)
	if !strings.EqualFold(scheme, "Bearer") || token == "" {
		return "", false
	}
	return token, true
}

// RawObject checks that raw, as WeChat sent it, is one JSON object, so it
// can be passed on unchanged: every field, Chinese and emoji included,
// reaches the caller as WeChat wrote it.
func RawObject(raw json.RawMessage) (json.RawMessage, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' || !json.Valid(raw) {
		return nil, fmt.Errorf("%w: the answer is not a JSON object", oauth.ErrBadResponse)
	}
	return raw, nil
}
