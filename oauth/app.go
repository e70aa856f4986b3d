package oauth

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/100steps/wxappliance/kv"
)

// Token APIs WeChat offers for the app access_token.
const (
	// TokenAPIStable is cgi-bin/stable_token with force_refresh=false: it
	// returns the same token while it is valid, so other systems holding it
	// are not invalidated.
	TokenAPIStable = "stable"
	// TokenAPIToken is cgi-bin/token: every call issues a new token and the
	// previous one dies five minutes later.
	TokenAPIToken = "token"
)

// AppConfig configures an App.
type AppConfig struct {
	AppID    string
	Secret   string
	TokenAPI string // TokenAPIStable (default) or TokenAPIToken
	// Bus carries notices between the instances sharing the store (see
	// CredentialConfig.Bus); nil when this process is the store's only user.
	Bus kv.Bus
	// Instance names this process in refresh leases (default: host name).
	Instance string
	Now      func() time.Time
	Logger   *slog.Logger
	// ObserveFetch is told of every fetch of the token (see
	// CredentialConfig.ObserveFetch).
	ObserveFetch func(Fetched)
}

// App is the central control of the app access_token and the gateway for
// every WeChat API called with it.
type App struct {
	client *Client
	id     string
	secret string
	api    string
	token  *Credential
	log    *slog.Logger
}

// appTokenKey is where the access_token lives in kv.
const appTokenKey = "cred/access_token"

// NewApp returns an App whose token is stored in store.
func NewApp(client *Client, store kv.Store, cfg AppConfig) *App {
	if cfg.TokenAPI == "" {
		cfg.TokenAPI = TokenAPIStable
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	a := &App{client: client, id: cfg.AppID, secret: cfg.Secret, api: cfg.TokenAPI, log: cfg.Logger}
	a.token = NewCredential(CredentialConfig{
		Name:     "access_token",
		Key:      appTokenKey,
		Store:    store,
		Bus:      cfg.Bus,
		Instance: cfg.Instance,
		Fetch:    a.fetchToken,
		Now:      cfg.Now,
		Logger:   cfg.Logger,

		ObserveFetch: cfg.ObserveFetch,
	})
	return a
}

// ID is the appid.
func (a *App) ID() string { return a.id }

// Client is the upstream client the App calls through.
func (a *App) Client() *Client { return a.client }

// Token returns the current app access_token.
func (a *App) Token(ctx context.Context) (Token, error) { return a.token.Get(ctx) }

// InvalidateToken replaces the token only if stale is still the current one.
func (a *App) InvalidateToken(ctx context.Context, stale string) (Token, error) {
	return a.token.Invalidate(ctx, stale)
}

// PeekToken returns the token this process holds, without any I/O, for
// an operator's view; ok is false when it holds none that has not expired.
func (a *App) PeekToken() (Token, bool) { return a.token.Peek() }

// TokenFetches reports how many times this process fetched the token.
func (a *App) TokenFetches() int { return a.token.Fetches() }

// Run keeps the token fresh, and in step with other instances, until ctx
// ends.
func (a *App) Run(ctx context.Context) { a.token.Run(ctx) }

// Do calls WeChat with the app token added as access_token. When WeChat
// rejects the token (40001, 40014, 42001) it is replaced, if nobody has
// replaced it already, and the call is retried once; never more, so a token
// WeChat keeps refusing cannot loop.
func (a *App) Do(ctx context.Context, req Request, handle func(*http.Response) error) error {
	tok, err := a.token.Get(ctx)
	if err != nil {
		return err
	}
	err = a.client.Do(ctx, withToken(req, tok.Value), handle)
	if !IsTokenRejected(err) {
		return err
	}
	a.log.Warn("access_token rejected, replacing it and retrying once", "path", req.Path, "err", err)
	fresh, ierr := a.token.Invalidate(ctx, tok.Value)
	if ierr != nil {
		return fmt.Errorf("%w (replacing the token failed: %w)", err, ierr)
	}
	return a.client.Do(ctx, withToken(req, fresh.Value), handle)
}

// CallJSON is Do decoding a JSON answer into out.
func (a *App) CallJSON(ctx context.Context, req Request, out any) error {
	return a.Do(ctx, req, func(resp *http.Response) error {
		return DecodeJSON(req.Path, resp.Body, out)
	})
}

// UserInfo is cgi-bin/user/info: the follower's profile as WeChat sent it,
// or ErrNotSubscribed when openid does not follow the account (WeChat then
// answers only {"subscribe":0,...}).
func (a *App) UserInfo(ctx context.Context, openid string) (json.RawMessage, error) {
	var raw json.RawMessage
	err := a.CallJSON(ctx, Request{
		Path:  "cgi-bin/user/info",
		Query: url.Values{"openid": {openid}, "lang": {"zh_CN"}},
	}, &raw)
	if err != nil {
		return nil, err
	}
	var sub struct {
		Subscribe *int `json:"subscribe"`
	}
	if err := json.Unmarshal(raw, &sub); err != nil || sub.Subscribe == nil {
		return nil, fmt.Errorf("%w: cgi-bin/user/info without subscribe", ErrBadResponse)
	}
	if *sub.Subscribe == 0 {
		return nil, ErrNotSubscribed
	}
	return raw, nil
}

func withToken(req Request, token string) Request {
	q := make(url.Values, len(req.Query)+1)
	for k, v := range req.Query {
		q[k] = v
	}
	q.Set("access_token", token)
	req.Query = q
	return req
}

func (a *App) fetchToken(ctx context.Context) (string, time.Duration, error) {
	var out struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
	}
	var err error
	if a.api == TokenAPIToken {
		err = a.client.CallJSON(ctx, Request{
			Path:  "cgi-bin/token",
			Query: url.Values{"grant_type": {"client_credential"}, "appid": {a.id}, "secret": {a.secret}},
		}, &out)
	} else {
		body, _ := json.Marshal(map[string]any{
			"grant_type": "client_credential", "appid": a.id, "secret": a.secret, "force_refresh": false,
		})
		err = a.client.CallJSON(ctx, Request{Method: http.MethodPost, Path: "cgi-bin/stable_token", Body: body}, &out)
	}
	if err != nil {
		return "", 0, err
	}
	return out.AccessToken, time.Duration(out.ExpiresIn) * time.Second, nil
}
