package rpc

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"

	"github.com/sourcegraph/jsonrpc2"

	"wxappliance/jssdk"
	"wxappliance/media"
	"wxappliance/oauth"
)

// Error codes of the JSON-RPC error objects this server answers. The
// standard ones come from the JSON-RPC 2.0 specification; the server ones
// each stand for one HTTP status of the browser routes' envelope, which
// error.data repeats as {status, msg}.
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
	CodeWeChat        = -32010 // WeChat answered an errcode with no row of its own; data has errcode and errmsg
	CodeTooLarge      = -32013 // 413: the media file is over media.max_bytes
)

// Messages of the HTTP envelope, repeated here so a backend sees the same
// status and msg over either transport.
const (
	msgNotLoggedIn   = "请先登录微信"
	msgNotSubscribed = "请先关注公众号"
	msgBadMediaID    = "media_id无效"
	msgTimeout       = "微信服务器超时"
	msgServerError   = "服务器错误"
	msgWeChatError   = "微信接口返回错误"
)

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

// wireError is an error whose code, status and message may be shown to the
// backend; err is for the log.
type wireError struct {
	code   int64
	status int
	msg    string
	err    error
}

func (e *wireError) Error() string {
	if e.err == nil {
		return e.msg
	}
	return e.msg + ": " + e.err.Error()
}

func (e *wireError) Unwrap() error { return e.err }

// invalidParams is a -32602 answer with msg shown to the backend.
func invalidParams(msg string, err error) error {
	return &wireError{code: CodeInvalidParams, status: 400, msg: msg, err: err}
}

var (
	errMethodNotFound = &wireError{code: CodeMethodNotFound, status: 404, msg: "方法不存在"}
	errBusy           = &wireError{code: CodeBusy, status: 503, msg: "请求过多，请稍后重试"}
	errPanic          = errors.New("rpc: method panicked")
)

// errorMapping is the one table from service errors to JSON-RPC errors;
// the first matching row wins. status and msg repeat the HTTP envelope's
// row for the same error (appliance/envelope.go).
var errorMapping = []struct {
	match  func(error) bool
	code   int64
	status int
	msg    string
}{
	{is(oauth.ErrNeedUserInfoScope), CodeNotLoggedIn, 401, "需要snsapi_userinfo授权才能获取用户信息，请以scope=snsapi_userinfo重新登录"},
	{is(oauth.ErrNoSession), CodeNotLoggedIn, 401, msgNotLoggedIn},
	{is(oauth.ErrBadTicket), CodeNotLoggedIn, 401, "登录票据无效、已过期或已使用"},
	{is(oauth.ErrNotSubscribed), CodeNotSubscribed, 403, msgNotSubscribed},
	{is(media.ErrBadID), CodeBadInput, 400, msgBadMediaID},
	{is(media.ErrTooLarge), CodeTooLarge, 413, "媒体文件超过大小上限"},
	{is(oauth.ErrTimeout), CodeTimeout, 504, msgTimeout},
	{code(oauth.CodeBusy), CodeTimeout, 504, msgTimeout},
	{is(oauth.ErrUnavailable), CodeTimeout, 504, "微信服务器无法访问"},
	{is(oauth.ErrBadResponse), CodeTimeout, 504, "微信服务器返回了无法识别的数据"},
	{code(oauth.CodeInvalidMediaID), CodeBadInput, 400, msgBadMediaID},
	{code(oauth.CodeQuota), CodeWeChat, 500, "微信接口调用次数已达今日上限"},
	{is(jssdk.ErrBadURL), CodeBadInput, 400, "url参数缺失或无效"},
	// Rows the browser routes do not need: a backend names any openid, and
	// waits on shared fetches that its own deadline can cut short.
	{code(oauth.CodeInvalidOpenID), CodeBadInput, 400, "openid无效"},
	{anyCode, CodeWeChat, 502, msgWeChatError},
	{is(context.DeadlineExceeded), CodeTimeout, 504, msgTimeout},
}

func is(target error) func(error) bool {
	return func(err error) bool { return errors.Is(err, target) }
}

func code(codes ...int) func(error) bool {
	return func(err error) bool { return oauth.HasCode(err, codes...) }
}

func anyCode(err error) bool {
	var apiErr *oauth.APIError
	return errors.As(err, &apiErr)
}

// codeMessages are the error objects' message members: short, English,
// stable; data.msg carries the envelope's Chinese text.
var codeMessages = map[int64]string{
	CodeParseError:     "parse error",
	CodeInvalidRequest: "invalid request",
	CodeMethodNotFound: "method not found",
	CodeInvalidParams:  "invalid params",
	CodeInternalError:  "internal error",
	CodeBadInput:       "bad input",
	CodeNotLoggedIn:    "not logged in",
	CodeNotSubscribed:  "not subscribed",
	CodeTimeout:        "wechat timeout",
	CodeBusy:           "server busy",
	CodeWeChat:         "wechat error",
	CodeTooLarge:       "too large",
}

// toWire maps err to the error object sent to the backend, and the level
// to log it at. Nothing of err's text goes on the wire unless err is a
// wireError: internal errors are logged, not shown.
func toWire(err error) (*jsonrpc2.Error, slog.Level) {
	w := &wireError{code: CodeInternalError, status: 500, msg: msgServerError}
	if !errors.As(err, &w) {
		for _, m := range errorMapping {
			if m.match(err) {
				w = &wireError{code: m.code, status: m.status, msg: m.msg}
				break
			}
		}
	}
	data := ErrorData{Status: w.status, Msg: w.msg}
	var apiErr *oauth.APIError
	if errors.As(err, &apiErr) {
		data.Errcode, data.Errmsg = apiErr.Code, apiErr.Msg
	}
	// Warn about what the operator may have to act on; WeChat refusing a
	// backend's wechat.call (502) is the backend's business.
	level := slog.LevelInfo
	if w.status >= 500 && w.status != 502 {
		level = slog.LevelWarn
	}
	return newError(w.code, data), level
}

func newError(code int64, data ErrorData) *jsonrpc2.Error {
	raw, _ := json.Marshal(data) // strings and ints: cannot fail
	msg := codeMessages[code]
	if msg == "" {
		msg = "error"
	}
	return &jsonrpc2.Error{Code: code, Message: msg, Data: (*json.RawMessage)(&raw)}
}
