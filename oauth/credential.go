package oauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"wxappliance/kv"
)

// Token is a credential with its expiry: the app access_token or the
// jsapi_ticket.
type Token struct {
	Value     string    `json:"value"`
	ExpiresAt time.Time `json:"expires_at"`
	// RefreshAt is when a background refresh is due: before ExpiresAt by a
	// margin that is always positive and shorter than the lifetime.
	RefreshAt time.Time `json:"refresh_at"`
}

// FetchFunc obtains a new credential from WeChat.
type FetchFunc func(ctx context.Context) (value string, expiresIn time.Duration, err error)

// CredentialConfig configures a Credential.
type CredentialConfig struct {
	Name  string // for logs: "access_token", "jsapi_ticket"
	Key   string // kv key the credential is stored under
	Store kv.Store
	Fetch FetchFunc
	// Margin is how long before expiry the background refresh runs; it is
	// clamped to a quarter of the lifetime WeChat grants. Default 5 minutes.
	Margin time.Duration
	Now    func() time.Time
	Logger *slog.Logger
}

// Credential is a cached credential shared by every caller of the process:
// stored in kv so it survives restarts, fetched by one caller at a time,
// refreshed before it expires, and replaced on demand only when the token a
// caller saw rejected is still the current one.
type Credential struct {
	cfg CredentialConfig

	mu       sync.Mutex
	cur      *Token
	loaded   bool // kv has been read once
	inflight *fetchCall
	fetches  int
}

type fetchCall struct {
	done chan struct{}
	tok  Token
	err  error
}

// NewCredential returns a Credential; nothing is fetched until first use.
func NewCredential(cfg CredentialConfig) *Credential {
	if cfg.Margin <= 0 {
		cfg.Margin = 5 * time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Credential{cfg: cfg}
}

// Get returns a usable credential, fetching it when there is none or it is
// due for refresh. A refresh that fails while the old value has not expired
// yet returns the old value: WeChat being briefly down near a refresh must
// not stop the service.
func (c *Credential) Get(ctx context.Context) (Token, error) {
	old, call, err := c.obtain(ctx, c.fresh)
	if err != nil || call == nil {
		return old, err
	}
	tok, err := c.wait(ctx, call)
	if err != nil && old.Value != "" && c.cfg.Now().Before(old.ExpiresAt) {
		c.cfg.Logger.Warn("refresh failed, using the current value until it expires", "credential", c.cfg.Name, "err", err)
		return old, nil
	}
	return tok, err
}

// Invalidate replaces the credential because WeChat rejected stale, but only
// when stale is still the current value: many callers reporting the same
// stale value cause one fetch, and a caller holding an old value gets the
// current one without a fetch.
func (c *Credential) Invalidate(ctx context.Context, stale string) (Token, error) {
	cur, call, err := c.obtain(ctx, func(cur *Token) bool {
		return cur.Value != stale && c.inflight == nil
	})
	if err != nil || call == nil {
		return cur, err
	}
	return c.wait(ctx, call)
}

// obtain returns the cached credential when keep accepts it; otherwise also
// the fetch (joined or started) that will replace it. keep runs under c.mu.
func (c *Credential) obtain(ctx context.Context, keep func(cur *Token) bool) (Token, *fetchCall, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.loadLocked(ctx); err != nil {
		return Token{}, nil, err
	}
	var cur Token
	if c.cur != nil {
		cur = *c.cur
		if keep(c.cur) {
			return cur, nil, nil
		}
	}
	return cur, c.startLocked(), nil
}

func (c *Credential) fresh(cur *Token) bool { return c.cfg.Now().Before(cur.RefreshAt) }

// Peek returns the cached credential without fetching; ok is false when
// there is none that has not expired.
func (c *Credential) Peek() (Token, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur == nil || !c.cfg.Now().Before(c.cur.ExpiresAt) {
		return Token{}, false
	}
	return *c.cur, true
}

// Fetches reports how many upstream fetches this process has started.
func (c *Credential) Fetches() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fetches
}

// Run refreshes the credential in the background shortly before it is due,
// retrying failures with a capped backoff, until ctx ends.
func (c *Credential) Run(ctx context.Context) {
	backoff := time.Second
	for {
		wait := c.untilRefresh()
		if wait > 0 {
			if sleep(ctx, wait) != nil {
				return
			}
		}
		if ctx.Err() != nil {
			return
		}
		if _, err := c.refreshIfDue(ctx); err != nil {
			c.cfg.Logger.Warn("background refresh failed", "credential", c.cfg.Name, "err", err, "retry_in", backoff)
			if sleep(ctx, backoff) != nil {
				return
			}
			backoff = min(backoff*2, time.Minute)
			continue
		}
		backoff = time.Second
	}
}

// refreshIfDue is Get without the fallback: the loop must see failures.
func (c *Credential) refreshIfDue(ctx context.Context) (Token, error) {
	cur, call, err := c.obtain(ctx, c.fresh)
	if err != nil || call == nil {
		return cur, err
	}
	return c.wait(ctx, call)
}

// untilRefresh is how long the background loop sleeps; with nothing cached
// it fetches at once so the first request finds a warm credential.
func (c *Credential) untilRefresh() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur == nil {
		return 0
	}
	return c.cur.RefreshAt.Sub(c.cfg.Now())
}

// loadLocked reads the stored credential once per process, so a restart
// reuses a valid token instead of fetching (and, with cgi-bin/token,
// invalidating) a new one.
func (c *Credential) loadLocked(ctx context.Context) error {
	if c.loaded {
		return nil
	}
	data, err := c.cfg.Store.Get(ctx, c.cfg.Key)
	if errors.Is(err, kv.ErrNotFound) {
		c.loaded = true
		return nil
	}
	if err != nil {
		return fmt.Errorf("load %s: %w", c.cfg.Name, err)
	}
	c.loaded = true
	var tok Token
	if err := json.Unmarshal(data, &tok); err != nil || tok.Value == "" {
		c.cfg.Logger.Warn("ignoring unreadable stored credential", "credential", c.cfg.Name)
		return nil
	}
	if c.cfg.Now().Before(tok.ExpiresAt) {
		c.cur = &tok
	}
	return nil
}

// startLocked joins the fetch under way or starts one. The fetch runs
// detached from the caller's context: a caller giving up must not fail the
// fetch for everyone else waiting on it.
func (c *Credential) startLocked() *fetchCall {
	if c.inflight != nil {
		return c.inflight
	}
	call := &fetchCall{done: make(chan struct{})}
	c.inflight = call
	c.fetches++
	go c.fetch(call)
	return call
}

func (c *Credential) fetch(call *fetchCall) {
	defer close(call.done)
	defer func() {
		if p := recover(); p != nil {
			call.err = fmt.Errorf("fetch %s: panic: %v", c.cfg.Name, p)
			c.finish(call)
		}
	}()
	ctx := context.Background()
	value, expiresIn, err := c.cfg.Fetch(ctx)
	if err == nil && (value == "" || expiresIn <= 0) {
		err = fmt.Errorf("%w: %s without value or with expires_in %v", ErrBadResponse, c.cfg.Name, expiresIn)
	}
	if err != nil {
		call.err = fmt.Errorf("fetch %s: %w", c.cfg.Name, err)
		c.finish(call)
		return
	}
	now := c.cfg.Now()
	margin := min(c.cfg.Margin, expiresIn/4)
	call.tok = Token{Value: value, ExpiresAt: now.Add(expiresIn), RefreshAt: now.Add(expiresIn - margin)}
	if data, err := json.Marshal(call.tok); err == nil {
		if err := c.cfg.Store.Put(ctx, c.cfg.Key, data, expiresIn); err != nil {
			c.cfg.Logger.Warn("could not store credential; it will be fetched again after a restart", "credential", c.cfg.Name, "err", err)
		}
	}
	c.cfg.Logger.Info("credential fetched", "credential", c.cfg.Name, "expires_in", expiresIn)
	c.finish(call)
}

func (c *Credential) finish(call *fetchCall) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if call.err == nil {
		tok := call.tok
		c.cur = &tok
	}
	c.inflight = nil
}

func (c *Credential) wait(ctx context.Context, call *fetchCall) (Token, error) {
	select {
	case <-call.done:
		return call.tok, call.err
	case <-ctx.Done():
		return Token{}, fmt.Errorf("waiting for %s: %w", c.cfg.Name, ctx.Err())
	}
}
