package appliance

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"

	"wxappliance/jssdk"
	"wxappliance/media"
	"wxappliance/oauth"
)

// envelope is the error body of every browser route, as the service this
// one replaces answered it: {"status": N, "msg": "...", "data": null}.
type envelope struct {
	Status int    `json:"status"`
	Msg    string `json:"msg"`
	Data   any    `json:"data"`
}

// Messages the seed contract shows; frontends may compare against them.
const (
	msgNotLoggedIn   = "请先登录微信"
	msgNotSubscribed = "请先关注公众号"
	msgBadMediaID    = "media_id无效"
	msgTimeout       = "微信服务器超时"
	msgServerError   = "服务器错误"
)

// publicError is an error whose status and message may be shown to a
// browser; the wrapped error is for the log.
type publicError struct {
	status int
	msg    string
	err    error
}

func (e *publicError) Error() string {
	if e.err == nil {
		return e.msg
	}
	return e.msg + ": " + e.err.Error()
}

func (e *publicError) Unwrap() error { return e.err }

func badRequest(msg string, err error) error {
	return &publicError{status: http.StatusBadRequest, msg: msg, err: err}
}

// errorMapping is the one table from service errors to HTTP answers; the
// first matching row wins. WeChat's raw errcode goes to the log only.
var errorMapping = []struct {
	match  func(error) bool
	status int
	msg    string
}{
	{is(oauth.ErrNeedUserInfoScope), http.StatusUnauthorized, "需要snsapi_userinfo授权才能获取用户信息，请以scope=snsapi_userinfo重新登录"},
	{is(oauth.ErrNoSession), http.StatusUnauthorized, msgNotLoggedIn},
	{is(oauth.ErrNotSubscribed), http.StatusForbidden, msgNotSubscribed},
	{is(oauth.ErrBadLoginState), http.StatusBadRequest, "登录状态无效或已过期，请重新登录"},
	{is(media.ErrBadID), http.StatusBadRequest, msgBadMediaID},
	{is(media.ErrTooLarge), http.StatusRequestEntityTooLarge, "媒体文件超过大小上限"},
	{tooLarge, http.StatusRequestEntityTooLarge, "请求体过大"},
	{is(oauth.ErrTimeout), http.StatusGatewayTimeout, msgTimeout},
	// A route's deadline is its WeChat deadline: running out of it while
	// waiting (on a shared token fetch, say) is WeChat being slow.
	{is(context.DeadlineExceeded), http.StatusGatewayTimeout, msgTimeout},
	{code(oauth.CodeBusy), http.StatusGatewayTimeout, msgTimeout},
	{is(oauth.ErrUnavailable), http.StatusGatewayTimeout, "微信服务器无法访问"},
	{is(oauth.ErrBadResponse), http.StatusGatewayTimeout, "微信服务器返回了无法识别的数据"},
	{code(oauth.CodeInvalidMediaID), http.StatusBadRequest, msgBadMediaID},
	{code(oauth.CodeInvalidCode, oauth.CodeCodeUsed), http.StatusUnauthorized, "授权码无效或已使用，请重新登录"},
	{code(oauth.CodeQuota), http.StatusInternalServerError, "微信接口调用次数已达今日上限"},
	{is(jssdk.ErrBadURL), http.StatusBadRequest, "url参数缺失或无效"},
}

func tooLarge(err error) bool {
	var mbe *http.MaxBytesError
	return errors.As(err, &mbe)
}

func is(target error) func(error) bool {
	return func(err error) bool { return errors.Is(err, target) }
}

func code(codes ...int) func(error) bool {
	return func(err error) bool { return oauth.HasCode(err, codes...) }
}

// writeError answers err in the envelope and logs what the browser does not
// see.
func writeError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	status, msg := http.StatusInternalServerError, msgServerError
	var pub *publicError
	switch {
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		// The browser left; nobody reads the answer.
		log.Debug("client went away", "path", r.URL.Path)
		return
	case errors.As(err, &pub):
		status, msg = pub.status, pub.msg
	default:
		for _, m := range errorMapping {
			if m.match(err) {
				status, msg = m.status, m.msg
				break
			}
		}
	}
	level := slog.LevelInfo
	if status >= 500 {
		level = slog.LevelWarn
	}
	log.Log(r.Context(), level, "request failed", "path", r.URL.Path, "status", status, "err", err)
	writeEnvelope(w, status, msg)
}

func writeEnvelope(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, envelope{Status: status, Msg: msg})
}

// writeJSON writes v without HTML escaping, so URLs keep their '&'.
func writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		status = http.StatusInternalServerError
		buf.Reset()
		buf.WriteString(`{"status":500,"msg":"` + msgServerError + `","data":null}` + "\n")
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}
