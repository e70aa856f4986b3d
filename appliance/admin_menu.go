package appliance

import (
	"context"
	"errors"
	"io"
	"net/http"

	"github.com/100steps/wxappliance/appliance/menu"
	"github.com/100steps/wxappliance/appliance/wire"
)

// The menu command calls WeChat through the running appliance, which holds
// the access_token, rather than fetching a token of its own.

func (a *Appliance) adminMenuShow(w http.ResponseWriter, r *http.Request) {
	a.adminMenu(w, r, func(ctx context.Context) error {
		raw, err := menu.Current(ctx, a.app)
		if err != nil {
			return err
		}
		return writeRawObject(w, raw)
	})
}

func (a *Appliance) adminMenuApply(w http.ResponseWriter, r *http.Request) {
	a.adminMenu(w, r, func(ctx context.Context) error {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
		if err != nil {
			return err
		}
		m, err := menu.Parse(body)
		if err != nil {
			return badRequest("菜单不是有效的JSON: "+err.Error(), err)
		}
		if err := m.Validate("menu"); err != nil {
			return badRequest(err.Error(), err)
		}
		if err := menu.Apply(ctx, a.app, m); err != nil {
			return err
		}
		writeEnvelope(w, http.StatusOK, "ok")
		return nil
	})
}

func (a *Appliance) adminMenuDelete(w http.ResponseWriter, r *http.Request) {
	a.adminMenu(w, r, func(ctx context.Context) error {
		if err := menu.Delete(ctx, a.app); err != nil {
			return err
		}
		writeEnvelope(w, http.StatusOK, "ok")
		return nil
	})
}

// adminMenu runs call with WeChat's deadline and answers its error; the
// operator sees WeChat's errcode, which a browser never does.
func (a *Appliance) adminMenu(w http.ResponseWriter, r *http.Request, call func(context.Context) error) {
	if !a.adminAuthorized(w, r) {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.cfg.WeChat.Timeout.D())
	defer cancel()
	err := call(ctx)
	switch {
	case err == nil:
	case errors.Is(err, menu.ErrNoMenu):
		writeEnvelope(w, http.StatusNotFound, "公众号没有自定义菜单 (no custom menu)")
	default:
		if apiErr, ok := wire.APIError(err); ok {
			err = wire.Errorf(wire.WeChat, apiErr.Error(), err)
		}
		writeError(w, r, a.log, err)
	}
}
