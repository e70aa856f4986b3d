package client

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/sourcegraph/jsonrpc2"
)

// Error codes the appliance answers (docs/rpc.md has the table).
const (
	CodeParseError     = -32700
	CodeInvalidRequest = -32600
	CodeMethodNotFound = -32601
	CodeInvalidParams  = -32602
	CodeInternalError  = -32603
	CodeBadInput       = -32000 // 400
	CodeNotLoggedIn    = -32001 // 401
	CodeNotSubscribed  = -32003 // 403
	CodeTimeout        = -32004 // 504
	CodeBusy           = -32005 // 503
	CodeWeChat         = -32010 // WeChat refused; Data.Errcode says why
	CodeTooLarge       = -32013 // 413
)

var (
	// ErrClosed is returned by calls on a Client after Close.
	ErrClosed = errors.New("rpc client: closed")
	// ErrDisconnected means the connection dropped while the call was in
	// flight: it may or may not have run. Calls made afterwards wait for
	// the reconnection.
	ErrDisconnected = errors.New("rpc client: disconnected during the call")
)

// Error is a JSON-RPC error object the appliance answered.
type Error struct {
	Code    int64
	Message string
	Data    ErrorData
}

// ErrorData is the error object's data: the HTTP envelope's status and msg,
// and WeChat's errcode and errmsg when WeChat refused the call.
type ErrorData struct {
	Status  int    `json:"status"`
	Msg     string `json:"msg"`
	Errcode int    `json:"errcode,omitempty"`
	Errmsg  string `json:"errmsg,omitempty"`
}

func (e *Error) Error() string {
	s := fmt.Sprintf("rpc error %d (%s): %d %s", e.Code, e.Message, e.Data.Status, e.Data.Msg)
	if e.Data.Errcode != 0 {
		s += fmt.Sprintf(" (errcode %d: %s)", e.Data.Errcode, e.Data.Errmsg)
	}
	return s
}

// CodeOf returns the JSON-RPC error code of err, or 0 when err is not an
// *Error.
func CodeOf(err error) int64 {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}

func fromWire(e *jsonrpc2.Error) *Error {
	out := &Error{Code: e.Code, Message: e.Message}
	if e.Data != nil {
		json.Unmarshal(*e.Data, &out.Data)
	}
	return out
}

// HandshakeError is a refused connection: 401 for a missing or wrong key,
// 403 for an Origin not allowed, 503 while the appliance shuts down.
type HandshakeError struct {
	StatusCode int
	Msg        string // the envelope's msg, when there was one
}

func (e *HandshakeError) Error() string {
	return fmt.Sprintf("rpc client: handshake refused: HTTP %d %s", e.StatusCode, e.Msg)
}
