package menu

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/100steps/wxappliance/oauth"
)

// ErrNoMenu means the account has no custom menu (WeChat's 46003).
var ErrNoMenu = errors.New("menu: the account has no custom menu")

// Caller calls WeChat with the app access_token: oauth.App.
type Caller interface {
	CallJSON(ctx context.Context, req oauth.Request, out any) error
}

// Apply replaces the account's menu with m, which must be valid.
func Apply(ctx context.Context, c Caller, m Menu) error {
	return c.CallJSON(ctx, oauth.Request{Method: http.MethodPost, Path: "cgi-bin/menu/create", Body: m.JSON()}, nil)
}

// Current returns the menu WeChat has, as menu/get answers it.
func Current(ctx context.Context, c Caller) (json.RawMessage, error) {
	var raw json.RawMessage
	err := c.CallJSON(ctx, oauth.Request{Path: "cgi-bin/menu/get"}, &raw)
	if oauth.HasCode(err, codeNoMenu) {
		return nil, ErrNoMenu
	}
	return raw, err
}

// Delete removes the account's menu.
func Delete(ctx context.Context, c Caller) error {
	return c.CallJSON(ctx, oauth.Request{Path: "cgi-bin/menu/delete"}, nil)
}

// codeNoMenu is menu/get's errcode for an account without a menu.
const codeNoMenu = 46003

// Parse reads a menu as cgi-bin/menu/create takes it, refusing members it
// does not know.
func Parse(data []byte) (Menu, error) {
	var m Menu
	err := strictJSON(data, &m)
	return m, err
}
