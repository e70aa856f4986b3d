package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/100steps/wxappliance/appliance"
	"github.com/100steps/wxappliance/appliance/menu"
	"github.com/100steps/wxappliance/kv"
)

const menuUsage = `usage: wxappliance menu show|apply|delete -config FILE

  show     print the custom menu WeChat has now
  apply    replace it with the menu of the config ([[menu.button]] or menu.file)
  delete   remove it
`

// menu manages the account's custom menu from the config. It calls WeChat
// through the running appliance when there is one (which holds the
// access_token), else with the stored token like another instance would:
// never with a token of its own.
func (m *Main) menu(ctx context.Context, args []string) error {
	if len(args) == 0 || (args[0] != "show" && args[0] != "apply" && args[0] != "delete") {
		fmt.Fprint(m.Stderr, menuUsage)
		return errors.New("menu: want show, apply or delete")
	}
	action := args[0]
	fs, path := m.flags("menu " + action)
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	cfg, err := appliance.LoadConfig(*path, m.Getenv)
	if err != nil {
		return err
	}
	api, closeAPI, err := openMenuAPI(cfg)
	if err != nil {
		return fmt.Errorf("menu: %w", err)
	}
	defer closeAPI()
	ctx, cancel := context.WithTimeout(ctx, 2*cfg.WeChat.Timeout.D())
	defer cancel()
	switch action {
	case "show":
		raw, err := api.show(ctx)
		if errors.Is(err, menu.ErrNoMenu) {
			fmt.Fprintln(m.Stdout, "the account has no custom menu")
			return nil
		}
		if err != nil {
			return fmt.Errorf("menu show: %w", err)
		}
		var pretty bytes.Buffer
		json.Indent(&pretty, raw, "", "  ")
		fmt.Fprintln(m.Stdout, pretty.String())
	case "apply":
		wanted, ok, err := cfg.Menu.Load()
		switch {
		case err != nil:
			return fmt.Errorf("menu apply: %w", err)
		case !ok:
			return errors.New("menu apply: the config has no menu: add [[menu.button]] tables or menu.file")
		}
		if err := api.apply(ctx, wanted); err != nil {
			return fmt.Errorf("menu apply: %w", err)
		}
		fmt.Fprintf(m.Stdout, "menu applied: %d buttons (WeChat clients show it within minutes; re-following the account shows it at once)\n", len(wanted.Button))
	case "delete":
		if err := api.delete(ctx); err != nil {
			return fmt.Errorf("menu delete: %w", err)
		}
		fmt.Fprintln(m.Stdout, "menu deleted")
	}
	return nil
}

// menuAPI is the menu's operations, through the running appliance or on
// the store.
type menuAPI interface {
	show(ctx context.Context) (json.RawMessage, error)
	apply(ctx context.Context, m menu.Menu) error
	delete(ctx context.Context) error
}

// openMenuAPI picks how to reach WeChat. The sandbox lives inside the
// appliance, and a Badger directory it holds is locked: both go through its
// admin listener. Otherwise the store is opened here.
func openMenuAPI(cfg appliance.Config) (menuAPI, func(), error) {
	log := slog.New(slog.DiscardHandler)
	if cfg.WeChat.Sandbox {
		api, err := adminMenuAPI(cfg, errors.New("the sandbox runs inside the appliance"))
		return api, func() {}, err
	}
	if cfg.Storage.Shared() {
		r, err := appliance.OpenRedis(cfg.Storage.Redis, log)
		if err != nil {
			return nil, nil, err
		}
		app, err := appliance.NewApp(cfg, r, r, log)
		return storeMenuAPI{app}, func() { r.Close() }, err
	}
	b, err := kv.OpenBadger(cfg.Storage.Dir, cfg.Storage.BadgerOptions(nil))
	if errors.Is(err, kv.ErrLocked) {
		api, err := adminMenuAPI(cfg, err)
		return api, func() {}, err
	}
	if err != nil {
		return nil, nil, err
	}
	app, err := appliance.NewApp(cfg, b, &kv.LocalBus{}, log)
	return storeMenuAPI{app}, func() { b.Close() }, err
}

type storeMenuAPI struct{ app menu.Caller }

func (s storeMenuAPI) show(ctx context.Context) (json.RawMessage, error) {
	return menu.Current(ctx, s.app)
}
func (s storeMenuAPI) apply(ctx context.Context, m menu.Menu) error { return menu.Apply(ctx, s.app, m) }
func (s storeMenuAPI) delete(ctx context.Context) error             { return menu.Delete(ctx, s.app) }

// adminMenu calls the running appliance's /admin/menu; why says why it
// must be the running one.
type adminMenu struct {
	url, token string
	client     *http.Client
}

func adminMenuAPI(cfg appliance.Config, why error) (menuAPI, error) {
	if cfg.Server.AdminListen == "" {
		return nil, fmt.Errorf("%w, and server.admin_listen is off: set it and start the appliance", why)
	}
	token, err := appliance.ReadAdminToken(cfg.Storage.Dir)
	if err != nil {
		return nil, fmt.Errorf("%w, but its admin token cannot be read (is it running?): %w", why, err)
	}
	return adminMenu{
		url:    "http://" + appliance.LoopbackAddr(cfg.Server.AdminListen) + "/admin/menu",
		token:  token,
		client: &http.Client{Timeout: 2*cfg.WeChat.Timeout.D() + 5*time.Second},
	}, nil
}

func (a adminMenu) show(ctx context.Context) (json.RawMessage, error) {
	body, err := a.do(ctx, http.MethodGet, nil)
	return json.RawMessage(body), err
}

func (a adminMenu) apply(ctx context.Context, m menu.Menu) error {
	_, err := a.do(ctx, http.MethodPut, m.JSON())
	return err
}

func (a adminMenu) delete(ctx context.Context) error {
	_, err := a.do(ctx, http.MethodDelete, nil)
	return err
}

func (a adminMenu) do(ctx context.Context, method string, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, a.url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	resp, err := a.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("asking the running appliance at %s: %w", a.url, err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	switch {
	case err != nil:
		return nil, err
	case resp.StatusCode == http.StatusNotFound && method == http.MethodGet:
		return nil, menu.ErrNoMenu
	case resp.StatusCode != http.StatusOK:
		var env struct{ Msg string }
		json.Unmarshal(answer, &env)
		return nil, fmt.Errorf("the appliance answered %d: %s", resp.StatusCode, env.Msg)
	}
	return answer, nil
}
