package rpc

import (
	"encoding/json"
	"errors"
	"log/slog"

	"github.com/sourcegraph/jsonrpc2"

	"github.com/100steps/wxappliance/appliance/wire"
)

// Error codes of the JSON-RPC error objects this server answers. The
// standard ones come from the JSON-RPC 2.0 specification; the server ones
// each stand for one kind of wire's classification, whose HTTP status and
// message error.data repeats as {status, msg}.
const (
	CodeParseError     = jsonrpc2.CodeParseError     // -32700: the frame is not JSON (400)
	CodeInvalidRequest = jsonrpc2.CodeInvalidRequest // -32600: not a JSON-RPC 2.0 request, or a batch (400)
	CodeMethodNotFound = jsonrpc2.CodeMethodNotFound // -32601: no such method (404)
	CodeInvalidParams  = jsonrpc2.CodeInvalidParams  // -32602: params missing, of the wrong type or unknown (400)
	CodeInternalError  = jsonrpc2.CodeInternalError  // -32603: a bug or a storage failure; details in the log only (500)

	CodeBadInput      = -32000 // 400: a value WeChat or a service refused, e.g. media_id无效
	CodeNotLoggedIn   = -32001 // 401: no such session, login ticket unknown or used, userinfo scope missing
	CodeNotSubscribed = -32003 // 403: the user does not follow the account
	CodeTimeout       = -32004 // 504: WeChat did not answer in time, could not be reached or answered garbage
	CodeBusy          = -32005 // 503: too many requests waiting on this connection
	CodeWeChat        = -32010 // 500: WeChat answered an errcode; data has errcode and errmsg
	CodeTooLarge      = -32013 // 413: the media file is over media.max_bytes
)

// codes projects wire's kinds onto JSON-RPC codes, with the error object's
// message: short, English, stable; data.msg carries the Chinese text.
var codes = [...]struct {
	code int64
	msg  string
}{
	wire.Internal:        {CodeInternalError, "internal error"},
	wire.Invalid:         {CodeInvalidParams, "invalid params"},
	wire.BadInput:        {CodeBadInput, "bad input"},
	wire.NotLoggedIn:     {CodeNotLoggedIn, "not logged in"},
	wire.Forbidden:       {CodeNotSubscribed, "not subscribed"},
	wire.NotFound:        {CodeMethodNotFound, "method not found"},
	wire.TooLarge:        {CodeTooLarge, "too large"},
	wire.TooManyRequests: {CodeBusy, "too many requests"},
	wire.Busy:            {CodeBusy, "server busy"},
	wire.Timeout:         {CodeTimeout, "wechat timeout"},
	wire.WeChat:          {CodeWeChat, "wechat error"},
}

// ErrorData is the data member of every error object this server sends.
type ErrorData struct {
	Status int    `json:"status"`
	Msg    string `json:"msg"`
	// Errcode and Errmsg are WeChat's, when WeChat refused the call. The
	// backends are trusted, and the errcode is what WeChat's documentation
	// explains; the browser routes keep it in the log.
	Errcode int    `json:"errcode,omitempty"`
	Errmsg  string `json:"errmsg,omitempty"`
}

// invalidParams is a -32602 answer with msg shown to the backend.
func invalidParams(msg string, err error) error {
	return wire.Errorf(wire.Invalid, msg, err)
}

var (
	errMethodNotFound = wire.Errorf(wire.NotFound, "方法不存在", nil)
	errBusy           = wire.Errorf(wire.Busy, "请求过多，请稍后重试", nil)
	errClosing        = wire.Errorf(wire.Busy, "服务器正在关闭", nil)
	errPanic          = errors.New("rpc: method panicked")
)

// toWire maps err to the error object sent to the backend, and the level
// to log it at. Nothing of err's text goes on the wire: internal errors are
// logged, not shown.
func toWire(err error) (*jsonrpc2.Error, slog.Level) {
	kind, msg := wire.Classify(err)
	data := ErrorData{Status: kind.Status(), Msg: msg}
	if apiErr, ok := wire.APIError(err); ok {
		data.Errcode, data.Errmsg = apiErr.Code, apiErr.Msg
	}
	// Warn about what the operator may have to act on; WeChat refusing a
	// backend's wechat.call is the backend's business.
	level := slog.LevelInfo
	switch {
	case wire.Reported(err):
		level = slog.LevelDebug
	case data.Status >= 500 && kind != wire.WeChat:
		level = slog.LevelWarn
	}
	c := codes[kind]
	return newError(c.code, c.msg, data), level
}

func newError(code int64, message string, data ErrorData) *jsonrpc2.Error {
	raw, _ := json.Marshal(data) // strings and ints: cannot fail
	return &jsonrpc2.Error{Code: code, Message: message, Data: (*json.RawMessage)(&raw)}
}
