// Package appliance wires the services together, serves the browser routes
// and runs the server's lifecycle.
package appliance

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/100steps/wxappliance/appliance/cluster"
	"github.com/100steps/wxappliance/appliance/sandbox"
	"github.com/100steps/wxappliance/callback"
	"github.com/100steps/wxappliance/jssdk"
	"github.com/100steps/wxappliance/kv"
	"github.com/100steps/wxappliance/media"
	"github.com/100steps/wxappliance/oauth"
	"github.com/100steps/wxappliance/rpc"
)

// Options carries what New does not read from Config.
type Options struct {
	// Store is used as it is; when nil New opens the store [storage] names
	// (Badger in storage.dir, or Redis) and Close closes it.
	Store kv.Store
	// Bus carries notices between the holders of Store; nil means Store's
	// own when it is one (Redis), else one in this process.
	Bus    kv.Bus
	Logger *slog.Logger
	// Sandbox is mounted under /sandbox/ when wechat.sandbox is on; when nil
	// New creates one with the configured credentials.
	Sandbox *sandbox.Sandbox
	Now     func() time.Time
	// Version is shown on the status page and in wxappliance_build_info;
	// empty means the one the build records.
	Version string
}

// Appliance is the running product: services, routes and background work.
type Appliance struct {
	cfg       Config
	log       *slog.Logger
	store     kv.Store
	bus       kv.Bus
	ownsStore bool
	// instance names this process to the others sharing the store, in
	// refresh leases and callback claims.
	instance     string
	registry     *cluster.Registry // nil unless the store is shared
	relay        *cluster.Relay    // nil unless the store is shared and RPC is on
	app          *oauth.App
	web          *oauth.Web
	sessions     *oauth.Sessions
	jssdk        *jssdk.Service
	media        *media.Service
	callback     *callback.Service // nil when callback.token is empty
	sandbox      *sandbox.Sandbox
	rpc          *rpc.Server
	handler      http.Handler // the public listener's
	adminHandler http.Handler
	ops          *ops // metrics and the status page
	now          func() time.Time

	limiter        *limiter // nil: no per-client limit
	trustedProxies []netip.Prefix
	allowedReturn  func(host string) bool
	secureCookies  bool
	adminToken     string

	stopBackground context.CancelFunc
	background     sync.WaitGroup
}

// New builds the appliance from a validated cfg. With wechat.sandbox on, the
// caller must already have pointed wechat.api_base at the sandbox (Serve
// does this once it knows its listening address).
func New(cfg Config, opts Options) (*Appliance, error) {
	a := &Appliance{cfg: cfg, log: opts.Logger, store: opts.Store, bus: opts.Bus, instance: cluster.NewID()}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if a.store == nil {
		if err := a.openStore(); err != nil {
			a.Close()
			return nil, err
		}
	}
	if a.bus == nil {
		if b, ok := a.store.(kv.Bus); ok {
			a.bus = b
		} else {
			a.bus = &kv.LocalBus{}
		}
	}
	if err := a.build(opts); err != nil {
		a.Close()
		return nil, err
	}
	return a, nil
}

// NewApp is the app access_token's central control on store and bus, for
// commands that call WeChat beside (or instead of) a running appliance:
// they take part in its refresh lease and compare-and-set like another
// instance, so they never fetch a token of their own.
func NewApp(cfg Config, store kv.Store, bus kv.Bus, log *slog.Logger) (*oauth.App, error) {
	client, err := newUpstream(cfg.WeChat, log, nil)
	if err != nil {
		return nil, err
	}
	return newApp(cfg.WeChat, client, store, bus, cluster.NewID(), nil, log, nil), nil
}

// newUpstream is the WeChat client; observe, when not nil, is told of
// every call.
func newUpstream(cfg WeChatConfig, log *slog.Logger, observe func(api, errcode string, d time.Duration)) (*oauth.Client, error) {
	return oauth.NewClient(oauth.ClientConfig{
		BaseURL:   cfg.APIBase,
		Fallbacks: cfg.APIFallback,
		Timeout:   cfg.Timeout.D(),
		Logger:    log.With("component", "upstream"),
		Observe:   observe,
	})
}

func newApp(cfg WeChatConfig, client *oauth.Client, store kv.Store, bus kv.Bus, instance string, now func() time.Time, log *slog.Logger, observeFetch func(oauth.Fetched)) *oauth.App {
	return oauth.NewApp(client, store, oauth.AppConfig{
		AppID:        cfg.AppID,
		Secret:       cfg.AppSecret,
		TokenAPI:     cfg.TokenAPI,
		Bus:          bus,
		Instance:     instance,
		Now:          now,
		Logger:       log.With("component", "access_token"),
		ObserveFetch: observeFetch,
	})
}

// openStore opens the store [storage] names, and writes the admin token
// that authorizes the admin listener's commands (online backups, menus).
func (a *Appliance) openStore() error {
	if a.cfg.Storage.Shared() {
		r, err := OpenRedis(a.cfg.Storage.Redis, a.log.With("component", "redis"))
		if err != nil {
			return err
		}
		a.store = r
	} else {
		b, err := kv.OpenBadger(a.cfg.Storage.Dir, a.cfg.Storage.BadgerOptions(a.log.With("component", "badger")))
		if err != nil {
			return err
		}
		a.store = b
	}
	a.ownsStore = true
	if a.cfg.Server.AdminListen == "" {
		return nil
	}
	token, err := writeAdminToken(a.cfg.Storage.Dir)
	if err != nil {
		// A full disk must not keep the appliance from serving what it
		// can: only the admin commands are lost.
		a.log.Warn("no admin token: the backup and menu commands cannot reach this appliance", "err", err)
		return nil
	}
	a.adminToken = token
	return nil
}

func (a *Appliance) build(opts Options) error {
	a.now = opts.Now
	a.ops = newOps(opts.Version, opts.Now)
	// The services see the store through a counter of failures; a.store
	// stays the store itself, for backups, readiness and the cluster.
	store := countingStore{Store: a.store, failed: a.ops.storageError}
	client, err := newUpstream(a.cfg.WeChat, a.log, a.ops.wechatCall)
	if err != nil {
		return err
	}
	if a.cfg.Storage.Shared() {
		a.registry, err = cluster.NewRegistry(a.store, a.instance, cluster.RegistryConfig{Logger: a.log.With("component", "cluster", "instance", a.instance)})
		if err != nil {
			return err
		}
	}
	a.app = newApp(a.cfg.WeChat, client, store, a.bus, a.instance, opts.Now, a.log, a.ops.credentialFetched)
	a.web = oauth.NewWeb(client, a.cfg.WeChat.AppID, a.cfg.WeChat.AppSecret, a.cfg.WeChat.OAuthBase, opts.Now)
	// Badger is one process's: only these Sessions write its sessions.
	// Any other store may be shared, and its sessions changed elsewhere.
	var sessionBus kv.Bus
	if _, private := a.store.(*kv.Badger); !private {
		sessionBus = a.bus
	}
	a.sessions = oauth.NewSessions(store, a.web, oauth.SessionConfig{
		TTL:              a.cfg.OAuth.SessionTTL.D(),
		Bus:              sessionBus,
		MaxPendingLogins: a.cfg.OAuth.MaxPendingLogins,
		Now:              opts.Now,
		Logger:           a.log.With("component", "sessions"),
	})
	a.media = media.New(a.app, media.Options{
		MaxBytes: int64(a.cfg.Media.MaxBytes),
		Timeout:  a.cfg.Media.Timeout.D(),
		// WeChat silent for wechat.timeout, before it answers or mid-file,
		// is a 504, whatever time media.timeout leaves.
		StallTimeout: a.cfg.WeChat.Timeout.D(),
	})
	a.allowedReturn = hostMatcher(a.cfg.OAuth.AllowedReturnHosts)
	a.limiter = newLimiter(a.cfg.OAuth.LoginRate, a.cfg.OAuth.LoginBurst, opts.Now)
	if a.trustedProxies, err = parseProxies(a.cfg.Server.TrustedProxies); err != nil {
		return err
	}
	a.secureCookies = strings.HasPrefix(a.cfg.Server.BaseURL, "https://")
	jssdkHosts := a.cfg.JSSDK.AllowedHosts
	if len(jssdkHosts) == 0 {
		jssdkHosts = a.cfg.OAuth.AllowedReturnHosts
	}
	a.jssdk = jssdk.New(a.app, store, jssdk.Options{
		AllowedHost:  hostMatcher(jssdkHosts),
		Bus:          a.bus,
		Instance:     a.instance,
		Now:          opts.Now,
		Logger:       a.log.With("component", "jsapi_ticket"),
		ObserveFetch: a.ops.credentialFetched,
	})
	a.callback, err = a.newCallback(store, opts.Now)
	if err != nil {
		return err
	}
	if a.cfg.WeChat.Sandbox {
		a.sandbox = opts.Sandbox
		if a.sandbox == nil {
			a.sandbox = sandbox.New(sandbox.Options{
				AppID:     a.cfg.WeChat.AppID,
				AppSecret: a.cfg.WeChat.AppSecret,
				Logger:    a.log.With("component", "sandbox"),
				Callback:  a.sandboxCallbackTarget(),
			})
		}
	}
	if err := a.buildRPC(); err != nil {
		return err
	}
	a.watchOps()
	a.handler = a.routes()
	a.adminHandler = a.adminRoutes()
	return nil
}

// Handler is the appliance's HTTP handler, middleware included.
func (a *Appliance) Handler() http.Handler { return a.handler }

// App is the access_token holder, for transports and tests.
func (a *Appliance) App() *oauth.App { return a.app }

// Sessions holds logins, login states and tickets.
func (a *Appliance) Sessions() *oauth.Sessions { return a.sessions }

// Start runs the background refreshers until Close.
func (a *Appliance) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	a.stopBackground = cancel
	a.goBackground(ctx, "access_token refresher", a.app.Run)
	a.goBackground(ctx, "jsapi_ticket refresher", a.jssdk.Run)
	a.goBackground(ctx, "session notices", a.sessions.Run)
	if a.registry != nil {
		joinCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if err := a.registry.Join(joinCtx); err != nil {
			a.log.Warn("could not announce this instance to the others yet; retrying in the background", "instance", a.instance, "err", err)
		}
		cancel()
		a.goBackground(ctx, "cluster heartbeat", a.registry.Run)
	}
	if a.relay != nil {
		a.goBackground(ctx, "callback relay", a.relay.Run)
	}
}

// goBackground runs fn with a recover, so a bug in a background loop is a
// log line, not a dead process.
func (a *Appliance) goBackground(ctx context.Context, name string, fn func(context.Context)) {
	a.background.Add(1)
	go func() {
		defer a.background.Done()
		defer func() {
			if p := recover(); p != nil {
				a.log.Error("background task panicked", "task", name, "panic", p)
			}
		}()
		fn(ctx)
	}()
}

// instances is how the callback learns whether another instance that
// claimed a message is alive: nil (only this process) unless the store is
// shared.
func (a *Appliance) instances() callback.Instances {
	if a.registry == nil {
		return nil
	}
	return a.registry
}

// Close ends RPC connections, stops background work and closes the store
// if New opened it.
func (a *Appliance) Close() error {
	a.drainRPC()
	if a.stopBackground != nil {
		a.stopBackground()
	}
	a.background.Wait()
	a.removeAdminToken()
	if !a.ownsStore || a.store == nil {
		return nil
	}
	if c, ok := a.store.(interface{ Close() error }); ok {
		return c.Close()
	}
	return nil
}

// ready reports why the appliance cannot serve, or nil.
func (a *Appliance) ready(ctx context.Context) map[string]error {
	checks := map[string]error{"store": nil, "access_token": nil}
	if r, ok := a.store.(interface{ Ready() error }); ok {
		checks["store"] = r.Ready()
	}
	if checks["store"] == nil {
		if _, err := a.app.Token(ctx); err != nil {
			checks["access_token"] = err
		}
	} else {
		checks["access_token"] = errors.New("store not open")
	}
	return checks
}

// hostMatcher matches a URL host against patterns: an exact host (with or
// without port) or "*.suffix", which matches subdomains only.
func hostMatcher(patterns []string) func(host string) bool {
	if len(patterns) == 0 {
		return func(string) bool { return false }
	}
	return func(host string) bool {
		host = strings.ToLower(host)
		name := host
		if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.HasSuffix(host, "]") {
			name = host[:i]
		}
		for _, p := range patterns {
			if suffix, ok := strings.CutPrefix(p, "*."); ok {
				if strings.HasSuffix(name, "."+suffix) {
					return true
				}
				continue
			}
			if p == host || p == name {
				return true
			}
		}
		return false
	}
}

func describe(err error) string {
	if err == nil {
		return "ok"
	}
	return fmt.Sprint(err)
}
