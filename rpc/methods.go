package rpc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/100steps/wxappliance/appliance/wire"
)

// method is one JSON-RPC method: params as the backend sent them (nil when
// absent), the result to encode.
type method struct {
	fn      func(ctx context.Context, c *conn, params json.RawMessage) (any, error)
	timeout time.Duration
}

// methodTable is every method the server answers.
func (s *Server) methodTable() map[string]method {
	call, slow := s.opts.CallTimeout, s.opts.MediaTimeout
	return map[string]method{
		"session.openid":     {s.sessionOpenID, call},
		"session.user":       {s.sessionUser, call},
		"session.revoke":     {s.sessionRevoke, call},
		"ticket.redeem":      {s.ticketRedeem, call},
		"user.get":           {s.userGet, call},
		"media.get":          {s.mediaGet, slow},
		"jssdk.config":       {s.jssdkConfig, call},
		"token.get":          {s.tokenGet, call},
		"token.invalidate":   {s.tokenInvalidate, call},
		"wechat.call":        {s.wechatCall, call},
		"callback.subscribe": {s.callbackSubscribe, call},
	}
}

// sessionOpenID: {session} -> {openid}, like GET /auth/user/openid with the
// session cookie's value. An empty session is a browser without the cookie:
// not logged in, as over HTTP, rather than a bad call.
func (s *Server) sessionOpenID(ctx context.Context, _ *conn, raw json.RawMessage) (any, error) {
	var p struct {
		Session string `json:"session"`
	}
	if err := decodeParams(raw, &p); err != nil {
		return nil, err
	}
	sess, err := s.svc.Sessions.Lookup(ctx, p.Session)
	if err != nil {
		return nil, err
	}
	return struct {
		OpenID string `json:"openid"`
	}{sess.OpenID}, nil
}

// sessionUser: {session} -> the object GET /auth/user answers.
func (s *Server) sessionUser(ctx context.Context, _ *conn, raw json.RawMessage) (any, error) {
	var p struct {
		Session string `json:"session"`
	}
	if err := decodeParams(raw, &p); err != nil {
		return nil, err
	}
	info, err := s.svc.Sessions.UserInfo(ctx, p.Session)
	if err != nil {
		return nil, err
	}
	return wire.RawObject(info)
}

// sessionRevoke: {session} -> {revoked}: the session ends, as with
// POST /auth/logout, wherever its id was copied; revoked is false when
// there was none (already ended, expired or never existed).
func (s *Server) sessionRevoke(ctx context.Context, _ *conn, raw json.RawMessage) (any, error) {
	var p struct {
		Session string `json:"session"`
	}
	if err := decodeParams(raw, &p, required("session", &p.Session)); err != nil {
		return nil, err
	}
	revoked, err := s.svc.Sessions.Revoke(ctx, p.Session)
	if err != nil {
		return nil, err
	}
	return struct {
		Revoked bool `json:"revoked"`
	}{revoked}, nil
}

// ticketRedeem: {ticket} -> {openid, unionid?, scope}, once per ticket.
func (s *Server) ticketRedeem(ctx context.Context, _ *conn, raw json.RawMessage) (any, error) {
	var p struct {
		Ticket string `json:"ticket"`
	}
	if err := decodeParams(raw, &p); err != nil {
		return nil, err
	}
	return s.svc.Sessions.RedeemTicket(ctx, p.Ticket)
}

// userGet: {openid} -> cgi-bin/user/info as WeChat sent it; a user who
// does not follow the account is CodeNotSubscribed, as on
// GET /offiaccount/user.
func (s *Server) userGet(ctx context.Context, _ *conn, raw json.RawMessage) (any, error) {
	var p struct {
		OpenID string `json:"openid"`
	}
	if err := decodeParams(raw, &p, required("openid", &p.OpenID)); err != nil {
		return nil, err
	}
	if len(p.OpenID) > 128 || strings.ContainsFunc(p.OpenID, func(r rune) bool { return r <= ' ' || r >= 0x7f }) {
		return nil, wire.Errorf(wire.BadInput, "openid无效", nil)
	}
	info, err := s.svc.App.UserInfo(ctx, p.OpenID)
	if err != nil {
		return nil, err
	}
	return wire.RawObject(info)
}

// jssdkConfig: {url} -> {appid, timestamp, noncestr, signature}, like
// POST /offiaccount/jssdk.
func (s *Server) jssdkConfig(ctx context.Context, _ *conn, raw json.RawMessage) (any, error) {
	var p struct {
		URL string `json:"url"`
	}
	if err := decodeParams(raw, &p, required("url", &p.URL)); err != nil {
		return nil, err
	}
	return s.svc.JSSDK.Config(ctx, p.URL)
}

// tokenResult is the app access_token handed out to servers of the same
// account, so that none of them calls cgi-bin/token (and invalidates the
// others' token) itself.
type tokenResult struct {
	AccessToken string `json:"access_token"`
	ExpiresAt   int64  `json:"expires_at"` // Unix seconds
	ExpiresIn   int64  `json:"expires_in"` // seconds left when answered
}

func newTokenResult(value string, expiresAt time.Time) tokenResult {
	return tokenResult{
		AccessToken: value,
		ExpiresAt:   expiresAt.Unix(),
		ExpiresIn:   max(0, int64(time.Until(expiresAt)/time.Second)),
	}
}

// tokenGet: {} -> the current app access_token.
func (s *Server) tokenGet(ctx context.Context, _ *conn, raw json.RawMessage) (any, error) {
	if err := decodeParams(raw, &struct{}{}); err != nil {
		return nil, err
	}
	tok, err := s.svc.App.Token(ctx)
	if err != nil {
		return nil, err
	}
	return newTokenResult(tok.Value, tok.ExpiresAt), nil
}

// tokenInvalidate: {access_token} -> the token to use now. WeChat rejected
// access_token for the caller; it is replaced only if it is still the
// current one, so many servers reporting the same stale token cause one
// refresh, and a caller holding an old one just gets the current one.
func (s *Server) tokenInvalidate(ctx context.Context, _ *conn, raw json.RawMessage) (any, error) {
	var p struct {
		AccessToken string `json:"access_token"`
	}
	if err := decodeParams(raw, &p, required("access_token", &p.AccessToken)); err != nil {
		return nil, err
	}
	tok, err := s.svc.App.InvalidateToken(ctx, p.AccessToken)
	if err != nil {
		return nil, err
	}
	return newTokenResult(tok.Value, tok.ExpiresAt), nil
}

// decodeParams decodes the params object into v, a pointer to a struct,
// refusing members v does not have (a misspelt name fails loudly instead of
// being ignored), then runs checks.
func decodeParams(raw json.RawMessage, v any, checks ...func() error) error {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		raw = json.RawMessage("{}")
	}
	if raw[0] != '{' {
		return invalidParams("params必须是JSON对象", nil)
	}
	var members map[string]json.RawMessage
	if err := json.Unmarshal(raw, &members); err != nil {
		return invalidParams("params无效", err)
	}
	if name, ok := unknownMember(members, v); ok {
		return invalidParams(fmt.Sprintf("未知参数%q", name), nil)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		if typeErr, ok := errors.AsType[*json.UnmarshalTypeError](err); ok {
			return invalidParams(fmt.Sprintf("参数%s的类型应为%s", typeErr.Field, jsonKind(typeErr.Type.Kind().String())), err)
		}
		return invalidParams("params无效", err)
	}
	for _, check := range checks {
		if err := check(); err != nil {
			return err
		}
	}
	return nil
}

// unknownMember returns a member of the params object that no field of the
// struct v points to takes, matching names as encoding/json does (the tag,
// else the field name, case-insensitively).
func unknownMember(members map[string]json.RawMessage, v any) (string, bool) {
	t := reflect.TypeOf(v).Elem()
	for name := range members {
		known := false
		for i := 0; i < t.NumField() && !known; i++ {
			f := t.Field(i)
			tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if tag == "" {
				tag = f.Name
			}
			known = f.IsExported() && tag != "-" && strings.EqualFold(tag, name)
		}
		if !known {
			return name, true
		}
	}
	return "", false
}

// required checks that the string member name was given and not empty.
func required(name string, v *string) func() error {
	return func() error {
		if *v == "" {
			return invalidParams("缺少"+name+"参数", nil)
		}
		return nil
	}
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "字符串"
	case "map", "struct":
		return "对象"
	case "slice", "array":
		return "数组"
	}
	return goKind
}
