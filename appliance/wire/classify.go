package wire

import (
	"context"
	"errors"
	"net/http"

	"github.com/100steps/wxappliance/callback"
	"github.com/100steps/wxappliance/jssdk"
	"github.com/100steps/wxappliance/kv"
	"github.com/100steps/wxappliance/media"
	"github.com/100steps/wxappliance/oauth"
)

// Messages callers may compare against: the seed contract shows the first
// ones, and the transports use MsgServerError when all else fails.
const (
	MsgNotLoggedIn   = "请先登录微信"
	MsgNotSubscribed = "请先关注公众号"
	MsgBadMediaID    = "media_id无效"
	MsgTimeout       = "微信服务器超时"
	MsgServerError   = "服务器错误"
	MsgWeChatError   = "微信接口返回错误"
)

// table is the one map from service errors to what callers see; the first
// matching row wins, and an error no row matches is Internal. WeChat's raw
// errcode is not in the message: backends get it in the RPC error data,
// browsers never.
var table = []struct {
	match func(error) bool
	kind  Kind
	msg   string
}{
	{is(oauth.ErrNeedUserInfoScope), NotLoggedIn, "需要snsapi_userinfo授权才能获取用户信息，请以scope=snsapi_userinfo重新登录"},
	{is(oauth.ErrNoSession), NotLoggedIn, MsgNotLoggedIn},
	{is(oauth.ErrBadTicket), NotLoggedIn, "登录票据无效、已过期或已使用"},
	{is(oauth.ErrNotSubscribed), Forbidden, MsgNotSubscribed},
	{is(oauth.ErrTooManyLogins), Busy, "登录请求过多，请稍后重试"},
	{is(oauth.ErrBadLoginState), BadInput, "登录状态无效或已过期，请重新登录"},
	{is(media.ErrBadID), BadInput, MsgBadMediaID},
	{is(media.ErrTooLarge), TooLarge, "媒体文件超过大小上限"},
	{bodyTooLarge, TooLarge, "请求体过大"},
	{is(jssdk.ErrBadURL), BadInput, "url参数缺失或无效"},

	{is(callback.ErrSignature), Forbidden, "签名错误"},
	{is(callback.ErrStale), Forbidden, "时间戳超出允许范围"},
	{is(callback.ErrAppID), Forbidden, "消息不属于此公众号"},
	{is(callback.ErrPlaintext), Forbidden, "已配置EncodingAESKey，只接受加密消息（兼容或安全模式）"},
	{is(callback.ErrMalformed), BadInput, "消息格式错误"},
	{is(callback.ErrDecrypt), BadInput, "消息解密失败"},

	// Storage refusing a write is the appliance's trouble, not the
	// caller's: the same request succeeds once space or Redis is back.
	{is(kv.ErrNoSpace), Busy, "存储空间不足"},
	{is(kv.ErrUnavailable), Busy, "存储暂时不可用，请稍后重试"},

	{is(oauth.ErrTimeout), Timeout, MsgTimeout},
	// A call's deadline is its WeChat deadline: running out of it while
	// waiting (on a shared token fetch, say) is WeChat being slow.
	{is(context.DeadlineExceeded), Timeout, MsgTimeout},
	{code(oauth.CodeBusy), Timeout, MsgTimeout},
	{is(oauth.ErrUnavailable), Timeout, "微信服务器无法访问"},
	{is(oauth.ErrBadResponse), Timeout, "微信服务器返回了无法识别的数据"},
	{code(oauth.CodeInvalidMediaID), BadInput, MsgBadMediaID},
	{code(oauth.CodeInvalidCode, oauth.CodeCodeUsed), NotLoggedIn, "授权码无效或已使用，请重新登录"},
	{code(oauth.CodeInvalidOpenID), BadInput, "openid无效"},
	{code(oauth.CodeQuota), WeChat, "微信接口调用次数已达今日上限"},
	{anyCode, WeChat, MsgWeChatError},
}

// Classify returns the kind of err and the message its caller may see.
// An *Error anywhere in err's chain states both itself.
func Classify(err error) (Kind, string) {
	if e, ok := errors.AsType[*Error](err); ok {
		return e.Kind, e.Msg
	}
	for _, row := range table {
		if row.match(err) {
			return row.kind, row.msg
		}
	}
	return Internal, MsgServerError
}

// Reported says whether err is a state the store logs itself, once when it
// begins and once when it ends: a line per refused request would fill the
// very disk that is full.
func Reported(err error) bool { return errors.Is(err, kv.ErrNoSpace) }

// APIError returns WeChat's errcode and errmsg when WeChat refused the
// call: what a backend is told and a browser is not.
func APIError(err error) (*oauth.APIError, bool) {
	return errors.AsType[*oauth.APIError](err)
}

func is(target error) func(error) bool {
	return func(err error) bool { return errors.Is(err, target) }
}

func code(codes ...int) func(error) bool {
	return func(err error) bool { return oauth.HasCode(err, codes...) }
}

func anyCode(err error) bool {
	_, ok := APIError(err)
	return ok
}

func bodyTooLarge(err error) bool {
	_, ok := errors.AsType[*http.MaxBytesError](err)
	return ok
}
