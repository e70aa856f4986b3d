package rpc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/100steps/wxappliance/appliance/wire"
	"github.com/100steps/wxappliance/callback"
	"github.com/100steps/wxappliance/jssdk"
	"github.com/100steps/wxappliance/kv"
	"github.com/100steps/wxappliance/media"
	"github.com/100steps/wxappliance/oauth"
)

// TestEveryServiceErrorOnBothWires walks every error the services return
// through the one classification and both projections: the HTTP status and
// envelope message a browser sees, and the JSON-RPC code and data a backend
// sees, which must agree.
func TestEveryServiceErrorOnBothWires(t *testing.T) {
	wrapped := func(err error) error { return fmt.Errorf("somewhere: %w", err) }
	api := func(code int) error { return &oauth.APIError{Code: code, Msg: "m", Path: "cgi-bin/x"} }
	tests := []struct {
		name   string
		err    error
		status int
		code   int64
		msg    string
	}{
		{"oauth.ErrNeedUserInfoScope", fmt.Errorf("%w: %w", oauth.ErrNeedUserInfoScope, api(oauth.CodeScopeUnauthorize)), 401, CodeNotLoggedIn, "需要snsapi_userinfo授权才能获取用户信息，请以scope=snsapi_userinfo重新登录"},
		{"oauth.ErrNoSession", fmt.Errorf("%w: %w", oauth.ErrNoSession, api(oauth.CodeInvalidRefresh)), 401, CodeNotLoggedIn, wire.MsgNotLoggedIn},
		{"oauth.ErrBadTicket", oauth.ErrBadTicket, 401, CodeNotLoggedIn, "登录票据无效、已过期或已使用"},
		{"oauth.ErrNotSubscribed", oauth.ErrNotSubscribed, 403, CodeNotSubscribed, wire.MsgNotSubscribed},
		{"oauth.ErrTooManyLogins", oauth.ErrTooManyLogins, 503, CodeBusy, "登录请求过多，请稍后重试"},
		{"rate limited", wire.Errorf(wire.TooManyRequests, "请求过于频繁，请稍后再试", nil), 429, CodeBusy, "请求过于频繁，请稍后再试"},
		{"oauth.ErrBadLoginState", oauth.ErrBadLoginState, 400, CodeBadInput, "登录状态无效或已过期，请重新登录"},
		{"media.ErrBadID", media.ErrBadID, 400, CodeBadInput, wire.MsgBadMediaID},
		{"media.ErrTooLarge", media.ErrTooLarge, 413, CodeTooLarge, "媒体文件超过大小上限"},
		{"http.MaxBytesError", &http.MaxBytesError{Limit: 1}, 413, CodeTooLarge, "请求体过大"},
		{"jssdk.ErrBadURL", jssdk.ErrBadURL, 400, CodeBadInput, "url参数缺失或无效"},
		{"callback.ErrSignature", callback.ErrSignature, 403, CodeNotSubscribed, "签名错误"},
		{"callback.ErrStale", callback.ErrStale, 403, CodeNotSubscribed, "时间戳超出允许范围"},
		{"callback.ErrAppID", callback.ErrAppID, 403, CodeNotSubscribed, "消息不属于此公众号"},
		{"callback.ErrPlaintext", callback.ErrPlaintext, 403, CodeNotSubscribed, "已配置EncodingAESKey，只接受加密消息（兼容或安全模式）"},
		{"callback.ErrMalformed", callback.ErrMalformed, 400, CodeBadInput, "消息格式错误"},
		{"callback.ErrDecrypt", callback.ErrDecrypt, 400, CodeBadInput, "消息解密失败"},
		{"kv.ErrNoSpace", kv.ErrNoSpace, 503, CodeBusy, "存储空间不足"},
		{"kv.ErrUnavailable", kv.ErrUnavailable, 503, CodeBusy, "存储暂时不可用，请稍后重试"},
		{"oauth.ErrTimeout", oauth.ErrTimeout, 504, CodeTimeout, wire.MsgTimeout},
		{"context.DeadlineExceeded", fmt.Errorf("waiting for access_token: %w", context.DeadlineExceeded), 504, CodeTimeout, wire.MsgTimeout},
		{"errcode -1", api(oauth.CodeBusy), 504, CodeTimeout, wire.MsgTimeout},
		{"oauth.ErrUnavailable", oauth.ErrUnavailable, 504, CodeTimeout, "微信服务器无法访问"},
		{"oauth.ErrBadResponse", oauth.ErrBadResponse, 504, CodeTimeout, "微信服务器返回了无法识别的数据"},
		{"errcode 40007", api(oauth.CodeInvalidMediaID), 400, CodeBadInput, wire.MsgBadMediaID},
		{"errcode 40029", api(oauth.CodeInvalidCode), 401, CodeNotLoggedIn, "授权码无效或已使用，请重新登录"},
		{"errcode 40163", api(oauth.CodeCodeUsed), 401, CodeNotLoggedIn, "授权码无效或已使用，请重新登录"},
		{"errcode 40003", api(oauth.CodeInvalidOpenID), 400, CodeBadInput, "openid无效"},
		{"errcode 45009", api(oauth.CodeQuota), 500, CodeWeChat, "微信接口调用次数已达今日上限"},
		{"errcode 46003", api(46003), 500, CodeWeChat, wire.MsgWeChatError},
		{"wire.Invalid", invalidParams("缺少openid参数", nil), 400, CodeInvalidParams, "缺少openid参数"},
		{"method not found", errMethodNotFound, 404, CodeMethodNotFound, "方法不存在"},
		{"busy", errBusy, 503, CodeBusy, "请求过多，请稍后重试"},
		// Errors a caller never learns more of than "server error".
		{"kv.ErrNotFound", kv.ErrNotFound, 500, CodeInternalError, wire.MsgServerError},
		{"kv.ErrClosed", kv.ErrClosed, 500, CodeInternalError, wire.MsgServerError},
		{"kv.ErrLocked", kv.ErrLocked, 500, CodeInternalError, wire.MsgServerError},
		{"callback.ErrNoKey", callback.ErrNoKey, 500, CodeInternalError, wire.MsgServerError},
		{"callback.ErrBadReply", callback.ErrBadReply, 500, CodeInternalError, wire.MsgServerError},
		{"panic", errPanic, 500, CodeInternalError, wire.MsgServerError},
		{"anything else", errors.New("disk on fire"), 500, CodeInternalError, wire.MsgServerError},
	}
	listed := map[string]bool{}
	for _, tt := range tests {
		listed[tt.name] = true
		t.Run(tt.name, func(t *testing.T) {
			for _, err := range []error{tt.err, wrapped(tt.err)} {
				kind, msg := wire.Classify(err)
				if kind.Status() != tt.status || msg != tt.msg {
					t.Fatalf("HTTP: %d %q, want %d %q", kind.Status(), msg, tt.status, tt.msg)
				}
				e, _ := toWire(err)
				var data ErrorData
				if err := json.Unmarshal(*e.Data, &data); err != nil {
					t.Fatal(err)
				}
				if e.Code != tt.code || data.Status != tt.status || data.Msg != tt.msg {
					t.Fatalf("RPC: %d %+v, want %d %d %q", e.Code, data, tt.code, tt.status, tt.msg)
				}
				if strings.Contains(data.Msg, "disk on fire") || strings.Contains(e.Message, "disk on fire") {
					t.Fatal("internal error text reached the wire")
				}
			}
		})
	}
	// A sentinel added to a service without a row here fails this test.
	for _, pkg := range []string{"oauth", "media", "jssdk", "callback", "kv"} {
		for _, name := range sentinels(t, filepath.Join("..", pkg)) {
			if !listed[pkg+"."+name] {
				t.Errorf("%s.%s is not walked through both wires here", pkg, name)
			}
		}
	}
}

func TestWeChatErrcodeReachesBackendsOnly(t *testing.T) {
	e, _ := toWire(&oauth.APIError{Code: 46003, Msg: "menu no exist"})
	var data ErrorData
	if err := json.Unmarshal(*e.Data, &data); err != nil {
		t.Fatal(err)
	}
	if data.Errcode != 46003 || data.Errmsg != "menu no exist" {
		t.Fatalf("data %+v", data)
	}
}

// sentinels lists the package-level Err* variables of the Go package in dir.
func sentinels(t *testing.T, dir string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	fset := token.NewFileSet()
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, decl := range file.Decls {
			gen, ok := decl.(*ast.GenDecl)
			if !ok || gen.Tok != token.VAR {
				continue
			}
			for _, spec := range gen.Specs {
				for _, id := range spec.(*ast.ValueSpec).Names {
					if strings.HasPrefix(id.Name, "Err") {
						names = append(names, id.Name)
					}
				}
			}
		}
	}
	if len(names) == 0 {
		t.Fatalf("no sentinels found in %s", dir)
	}
	return names
}
