package oauth

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	mathrand "math/rand/v2"
	"os"
	"sync"
	"time"

	"github.com/100steps/wxappliance/kv"
)

// Token is a credential with its expiry: the app access_token or the
// jsapi_ticket.
type Token struct {
	Value     string    `json:"value"`
	ExpiresAt time.Time `json:"expires_at"`
	// RefreshAt is when a background refresh is due: before ExpiresAt by a
	// margin that is always positive and shorter than the lifetime.
	RefreshAt time.Time `json:"refresh_at"`
	// FetchedAt is when WeChat issued it, by whichever instance fetched
	// it; zero in records stored before it was kept.
	FetchedAt time.Time `json:"fetched_at,omitzero"`
}

// FetchFunc obtains a new credential from WeChat.
type FetchFunc func(ctx context.Context) (value string, expiresIn time.Duration, err error)

// CredentialConfig configures a Credential.
type CredentialConfig struct {
	Name  string // for logs: "access_token", "jsapi_ticket"
	Key   string // kv key the credential is stored under
	Store kv.Store
	// Bus carries "the stored credential changed" notices between the
	// instances sharing Store. Nil gives a private bus, which is right when
	// this process is the store's only user.
	Bus kv.Bus
	// Instance names this process in refresh leases, for operators reading
	// the store; a random suffix keeps two holders of one name apart.
	// Default: the host name.
	Instance string
	Fetch    FetchFunc
	// Margin is how long before expiry the background refresh runs; it is
	// clamped to a quarter of the lifetime WeChat grants. Default 5 minutes.
	Margin time.Duration
	// FetchTimeout bounds one upstream fetch. The refresh lease outlives it
	// by leaseSlack, so a fetch can never outlast its lease and overlap with
	// another instance's. Default 20 seconds.
	FetchTimeout time.Duration
	// PollInterval is how often an instance waiting for another one's fetch
	// looks at the store, since notices may be lost. Default 150 ms.
	PollInterval time.Duration
	Now          func() time.Time
	// After is the timer of the background refresh's long sleeps; tests
	// drive it with a fake clock. Default time.After.
	After  func(time.Duration) <-chan time.Time
	Logger *slog.Logger
	// ObserveFetch, when set, is told of every upstream fetch this process
	// makes, when it ends; nil means nobody listens.
	ObserveFetch func(Fetched)
}

const (
	defaultFetchTimeout = 20 * time.Second
	// leaseSlack is what a lease holder has after its fetch's deadline to
	// store the result and release the lease.
	leaseSlack = 5 * time.Second
	// maxJitter caps how far apart the instances' background refreshes
	// wake, so they do not all reach for the lease in the same instant.
	maxJitter = 30 * time.Second
	// resyncInterval is how often a subscribed instance rereads the store
	// anyway, in case a notice was lost.
	resyncInterval = 30 * time.Second
)

// Credential is a credential shared by every caller of every instance that
// uses one store. The store holds the truth: the current record under Key,
// and while someone fetches a refresh lease under Key+"/lease". Each process
// keeps a local copy, fetched by one caller at a time, refreshed before it
// expires, replaced on demand only when the token a caller saw rejected is
// still the current one, and dropped when another instance replaces it
// (notices on Key+"/changed").
type Credential struct {
	cfg      CredentialConfig
	id       string // lease owner and notice sender
	leaseKey string
	channel  string
	leaseTTL time.Duration
	opTTL    time.Duration
	private  bool // nobody else publishes on the bus: the local copy is the store's

	// turn orders reading or writing the store with adopting the result,
	// so the local copy never goes back to an older record. A channel, not
	// a mutex, so waiting for it honours ctx.
	turn chan struct{}

	mu       sync.Mutex
	cur      *Token
	raw      []byte                // the stored record cur was read from or written as
	live     bool                  // a subscription keeps cur in step with the store
	changed  chan struct{}         // closed (and replaced) whenever cur changes
	inflight map[string]*fetchCall // by need: "" due or missing, else the stale value
	fetches  int
}

type fetchCall struct {
	done chan struct{}
	tok  Token
	err  error
}

// lease is the record a fetching instance holds under leaseKey.
type lease struct {
	Owner string    `json:"owner"`
	Nonce string    `json:"nonce"` // one taking of the lease from the next
	Since time.Time `json:"since"`
}

// NewCredential returns a Credential; nothing is fetched until first use.
func NewCredential(cfg CredentialConfig) *Credential {
	if cfg.Margin <= 0 {
		cfg.Margin = 5 * time.Minute
	}
	if cfg.FetchTimeout <= 0 {
		cfg.FetchTimeout = defaultFetchTimeout
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 150 * time.Millisecond
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.After == nil {
		cfg.After = time.After
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Credential{
		leaseKey: cfg.Key + "/lease",
		channel:  cfg.Key + "/changed",
		leaseTTL: cfg.FetchTimeout + leaseSlack,
		turn:     make(chan struct{}, 1),
		changed:  make(chan struct{}),
		inflight: map[string]*fetchCall{},
	}
	// Waiting out a dead holder's lease, then fetching under our own.
	c.opTTL = 2*c.leaseTTL + cfg.FetchTimeout
	if cfg.Bus == nil {
		cfg.Bus = &kv.LocalBus{}
		c.private = true
	}
	if cfg.Instance == "" {
		cfg.Instance, _ = os.Hostname()
	}
	c.id = cfg.Instance + "-" + rand.Text()[:8]
	c.cfg = cfg
	return c
}

// Get returns a usable credential, fetching it when there is none or it is
// due for refresh. A refresh that fails while the old value has not expired
// yet returns the old value: WeChat or the store being briefly down near a
// refresh must not stop the service.
func (c *Credential) Get(ctx context.Context) (Token, error) {
	c.mu.Lock()
	old := c.cur
	if old != nil && c.trustedLocked() && c.fresh(old) {
		c.mu.Unlock()
		return *old, nil
	}
	call := c.startLocked("")
	c.mu.Unlock()
	tok, err := c.wait(ctx, call)
	if err != nil && old != nil && c.cfg.Now().Before(old.ExpiresAt) {
		c.cfg.Logger.Warn("refresh failed, using the current value until it expires", "credential", c.cfg.Name, "err", err)
		return *old, nil
	}
	return tok, err
}

// Invalidate replaces the credential because WeChat rejected stale, but only
// when stale is still the current value in the store: many callers on any
// number of instances reporting the same stale value cause one fetch, and a
// caller holding an old value gets the current one without a fetch. The
// fetch never forces WeChat to issue a new token (see NOTES.md on
// stable_token): it asks again, after the store has been reread.
func (c *Credential) Invalidate(ctx context.Context, stale string) (Token, error) {
	c.mu.Lock()
	if cur := c.cur; cur != nil && c.trustedLocked() && cur.Value != stale && c.cfg.Now().Before(cur.ExpiresAt) {
		c.mu.Unlock()
		return *cur, nil
	}
	call := c.startLocked(stale)
	c.mu.Unlock()
	return c.wait(ctx, call)
}

// Peek returns the local copy without any I/O; ok is false when there is
// none that has not expired.
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

func (c *Credential) fresh(tok *Token) bool { return c.cfg.Now().Before(tok.RefreshAt) }

// trustedLocked reports whether the local copy may be served without
// asking the store: when nobody else can change the store, or while notices
// of changes reach us. Otherwise every need reads the store.
func (c *Credential) trustedLocked() bool { return c.private || c.live }

// startLocked joins the refresh under way for the same need or starts one:
// "" for a due or missing credential, else the stale value to replace. It
// runs detached from the caller's context, since a caller giving up must not
// fail it for everyone else waiting, and is bounded by opTTL instead.
func (c *Credential) startLocked(stale string) *fetchCall {
	if call := c.inflight[stale]; call != nil {
		return call
	}
	call := &fetchCall{done: make(chan struct{})}
	c.inflight[stale] = call
	go c.run(call, stale)
	return call
}

func (c *Credential) run(call *fetchCall, stale string) {
	defer func() {
		if p := recover(); p != nil {
			call.err = fmt.Errorf("refresh %s: panic: %v", c.cfg.Name, p)
		}
		c.mu.Lock()
		delete(c.inflight, stale)
		c.mu.Unlock()
		close(call.done)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), c.opTTL)
	defer cancel()
	call.tok, call.err = c.settle(ctx, stale)
}

func (c *Credential) wait(ctx context.Context, call *fetchCall) (Token, error) {
	select {
	case <-call.done:
		return call.tok, call.err
	case <-ctx.Done():
		return Token{}, fmt.Errorf("waiting for %s: %w", c.cfg.Name, ctx.Err())
	}
}

// settle returns a credential that meets the need, from the store when
// another instance has provided one, else fetched under the refresh lease.
// Without the lease it waits for the holder's result (a notice or the next
// poll) or for the lease to go (released, or expired with a crashed holder)
// and tries again.
func (c *Credential) settle(ctx context.Context, stale string) (Token, error) {
	var seen []byte // the record that held stale when first read
	for {
		wake := c.changes()
		tok, raw, err := c.load(ctx)
		if err != nil {
			return Token{}, err
		}
		seen = noteStale(seen, tok, raw, stale)
		if c.satisfies(tok, raw, stale, seen) {
			return *tok, nil
		}
		l, deadline, ok, err := c.takeLease(ctx)
		if err != nil {
			return Token{}, err
		}
		if ok {
			return c.refreshUnderLease(ctx, l, deadline, stale, seen)
		}
		if err := c.await(ctx, wake); err != nil {
			return Token{}, fmt.Errorf("waiting for another instance to fetch %s: %w", c.cfg.Name, err)
		}
	}
}

// noteStale remembers the first stored record that holds the stale value:
// any later record, even with the same value (stable_token answers the same
// token while WeChat holds it valid), is someone else's answer to the same
// report.
func noteStale(seen []byte, tok *Token, raw []byte, stale string) []byte {
	if seen == nil && stale != "" && tok != nil && tok.Value == stale {
		return raw
	}
	return seen
}

// satisfies reports whether the stored tok meets the need without a fetch.
func (c *Credential) satisfies(tok *Token, raw []byte, stale string, seen []byte) bool {
	if tok == nil || !c.cfg.Now().Before(tok.ExpiresAt) {
		return false
	}
	if stale == "" {
		return c.fresh(tok)
	}
	return tok.Value != stale || (seen != nil && !bytes.Equal(raw, seen))
}

// refreshUnderLease checks the store once more (the previous holder may
// have stored its result just before releasing), fetches, and stores the
// result against the record it replaces.
func (c *Credential) refreshUnderLease(ctx context.Context, held []byte, deadline time.Time, stale string, seen []byte) (Token, error) {
	defer c.releaseLease(held)
	tok, raw, err := c.load(ctx)
	if err != nil {
		return Token{}, err
	}
	seen = noteStale(seen, tok, raw, stale)
	if c.satisfies(tok, raw, stale, seen) {
		return *tok, nil
	}
	fetchCtx, cancel := context.WithDeadline(ctx, deadline)
	next, ttl, err := c.fetch(fetchCtx)
	cancel()
	if err != nil {
		return Token{}, err
	}
	return c.save(ctx, next, ttl, raw, stale, seen)
}

// save writes next in place of the record old (nil: none), atomically: a
// compare-and-swap, never a read followed by a write. When the record
// changed meanwhile (our lease expired and someone else stored a value) and
// the new one meets the need, it wins and ours is dropped.
func (c *Credential) save(ctx context.Context, next Token, ttl time.Duration, old []byte, stale string, seen []byte) (Token, error) {
	data, err := json.Marshal(next)
	if err != nil {
		return Token{}, fmt.Errorf("encode %s: %w", c.cfg.Name, err)
	}
	for attempt := 0; ; attempt++ {
		ok, err := c.write(ctx, old, data, ttl)
		if err != nil {
			c.cfg.Logger.Warn("could not store credential; only this instance has it", "credential", c.cfg.Name, "err", err)
			c.adopt(&next, data)
			return next, nil
		}
		if ok {
			c.notify()
			return next, nil
		}
		tok, raw, err := c.load(ctx)
		if err == nil && c.satisfies(tok, raw, stale, seen) {
			c.cfg.Logger.Warn("another instance stored a credential while this one fetched; using theirs", "credential", c.cfg.Name)
			return *tok, nil
		}
		if err != nil || attempt > 0 {
			c.adopt(&next, data)
			return next, nil
		}
		old = raw
	}
}

// fetch asks WeChat for a new credential.
func (c *Credential) fetch(ctx context.Context) (Token, time.Duration, error) {
	c.mu.Lock()
	c.fetches++
	c.mu.Unlock()
	value, expiresIn, err := c.cfg.Fetch(ctx)
	if err == nil && (value == "" || expiresIn <= 0) {
		err = fmt.Errorf("%w: %s without value or with expires_in %v", ErrBadResponse, c.cfg.Name, expiresIn)
	}
	now := c.cfg.Now()
	if err != nil {
		err = fmt.Errorf("fetch %s: %w", c.cfg.Name, err)
		c.observeFetch(Fetched{Credential: c.cfg.Name, At: now, Err: err})
		return Token{}, 0, err
	}
	margin := min(c.cfg.Margin, expiresIn/4)
	c.cfg.Logger.Info("credential fetched", "credential", c.cfg.Name, "expires_in", expiresIn)
	tok := Token{Value: value, ExpiresAt: now.Add(expiresIn), RefreshAt: now.Add(expiresIn - margin), FetchedAt: now}
	c.observeFetch(Fetched{Credential: c.cfg.Name, At: now, ExpiresAt: tok.ExpiresAt})
	return tok, expiresIn, nil
}

func (c *Credential) observeFetch(f Fetched) {
	if c.cfg.ObserveFetch != nil {
		c.cfg.ObserveFetch(f)
	}
}

// load reads the stored record and makes it the local copy. tok is nil
// when there is none or it is unreadable; raw is what is stored, if
// anything, for a compare-and-swap to replace.
func (c *Credential) load(ctx context.Context) (tok *Token, raw []byte, err error) {
	if err := c.lockTurn(ctx); err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", c.cfg.Name, err)
	}
	defer c.unlockTurn()
	raw, err = c.cfg.Store.Get(ctx, c.cfg.Key)
	switch {
	case errors.Is(err, kv.ErrNotFound):
		c.adopt(nil, nil)
		return nil, nil, nil
	case err != nil:
		return nil, nil, fmt.Errorf("read %s: %w", c.cfg.Name, err)
	}
	var t Token
	if err := json.Unmarshal(raw, &t); err != nil || t.Value == "" {
		c.cfg.Logger.Warn("ignoring unreadable stored credential", "credential", c.cfg.Name)
		c.adopt(nil, raw)
		return nil, raw, nil
	}
	c.adopt(&t, raw)
	return &t, raw, nil
}

// write stores data in place of old (nil: only if nothing is stored) and
// makes it the local copy when that worked.
func (c *Credential) write(ctx context.Context, old, data []byte, ttl time.Duration) (bool, error) {
	if err := c.lockTurn(ctx); err != nil {
		return false, err
	}
	defer c.unlockTurn()
	var ok bool
	var err error
	if old == nil {
		ok, err = c.cfg.Store.PutIfAbsent(ctx, c.cfg.Key, data, ttl)
	} else {
		ok, err = c.cfg.Store.CompareAndSwap(ctx, c.cfg.Key, old, data, ttl)
	}
	if ok {
		var t Token
		_ = json.Unmarshal(data, &t)
		c.adopt(&t, data)
	}
	return ok, err
}

func (c *Credential) lockTurn(ctx context.Context) error {
	select {
	case c.turn <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *Credential) unlockTurn() { <-c.turn }

// adopt makes raw the local copy and wakes local waiters if it changed.
func (c *Credential) adopt(tok *Token, raw []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if bytes.Equal(raw, c.raw) && (raw == nil) == (c.raw == nil) {
		return
	}
	c.cur, c.raw = tok, raw
	close(c.changed)
	c.changed = make(chan struct{})
}

// changes returns a channel closed at the next change of the local copy.
func (c *Credential) changes() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changed
}

// notify tells the other instances to reread the store. Best effort: they
// also poll while they wait, and resync now and then.
func (c *Credential) notify() {
	if c.private {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), leaseSlack)
	defer cancel()
	if err := c.cfg.Bus.Publish(ctx, c.channel, []byte(c.id)); err != nil {
		c.cfg.Logger.Warn("could not announce the new credential; other instances will find it when they look", "credential", c.cfg.Name, "err", err)
	}
}

// takeLease tries to become the one instance that fetches. The fetch must
// end by deadline, which the lease outlives by leaseSlack.
func (c *Credential) takeLease(ctx context.Context) (held []byte, deadline time.Time, ok bool, err error) {
	held, err = json.Marshal(lease{Owner: c.id, Nonce: rand.Text(), Since: c.cfg.Now()})
	if err != nil {
		return nil, time.Time{}, false, err
	}
	deadline = time.Now().Add(c.cfg.FetchTimeout)
	ok, err = c.cfg.Store.PutIfAbsent(ctx, c.leaseKey, held, c.leaseTTL)
	switch {
	case errors.Is(err, kv.ErrNoSpace):
		// A full disk means a local store, one process: the local
		// single-flight is all the coordination there is to have.
		c.cfg.Logger.Warn("store full: fetching without a refresh lease", "credential", c.cfg.Name)
		return nil, deadline, true, nil
	case err != nil:
		return nil, time.Time{}, false, fmt.Errorf("take %s refresh lease: %w", c.cfg.Name, err)
	}
	return held, deadline, ok, nil
}

// releaseLease deletes the lease only if it is still ours: one that
// expired and was taken by another instance stays theirs.
func (c *Credential) releaseLease(held []byte) {
	if held == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), leaseSlack)
	defer cancel()
	ok, err := c.cfg.Store.CompareAndDelete(ctx, c.leaseKey, held)
	switch {
	case err != nil:
		c.cfg.Logger.Warn("could not release the refresh lease; it expires by itself", "credential", c.cfg.Name, "err", err)
	case !ok:
		c.cfg.Logger.Warn("refresh lease expired before the fetch ended", "credential", c.cfg.Name)
	}
}

// await returns at the next local change, notice or poll, whichever is
// first.
func (c *Credential) await(ctx context.Context, wake <-chan struct{}) error {
	t := time.NewTimer(c.cfg.PollInterval)
	defer t.Stop()
	select {
	case <-wake:
		return nil
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run keeps the credential fresh in the background until ctx ends: it
// follows the other instances' notices, so the local copy can be served
// without asking the store, and refreshes shortly after RefreshAt (with
// jitter; the first instance to wake takes the lease and fetches, the others
// find its result in the store), retrying failures with a capped backoff.
func (c *Credential) Run(ctx context.Context) {
	var wg sync.WaitGroup
	if !c.private {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.watch(ctx)
		}()
	}
	c.refreshLoop(ctx)
	wg.Wait()
}

func (c *Credential) refreshLoop(ctx context.Context) {
	backoff := time.Second
	for {
		if wait := c.untilRefresh(); wait > 0 {
			select {
			case <-c.cfg.After(wait):
			case <-ctx.Done():
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
	c.mu.Lock()
	if cur := c.cur; cur != nil && c.trustedLocked() && c.fresh(cur) {
		c.mu.Unlock()
		return *cur, nil
	}
	call := c.startLocked("")
	c.mu.Unlock()
	return c.wait(ctx, call)
}

// untilRefresh is how long the background loop sleeps: until RefreshAt plus
// a random part of the margin, so that instances do not all wake at once.
// With nothing cached it fetches at once so the first request finds a warm
// credential.
func (c *Credential) untilRefresh() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur == nil {
		return 0
	}
	wait := c.cur.RefreshAt.Sub(c.cfg.Now())
	if window := min(c.cur.ExpiresAt.Sub(c.cur.RefreshAt)/4, maxJitter); window > 0 {
		wait += mathrand.N(window)
	}
	return wait
}

// watch subscribes to the other instances' notices for as long as ctx
// lives, subscribing again when the bus drops the subscription.
func (c *Credential) watch(ctx context.Context) {
	defer func() {
		if p := recover(); p != nil {
			c.cfg.Logger.Error("credential watcher panicked; reading the store on every need from now on", "credential", c.cfg.Name, "panic", p)
		}
		c.setLive(false)
	}()
	backoff := time.Second
	for ctx.Err() == nil {
		notices, err := c.cfg.Bus.Subscribe(ctx, c.channel)
		if err != nil {
			c.cfg.Logger.Warn("could not subscribe to credential notices", "credential", c.cfg.Name, "err", err, "retry_in", backoff)
			if sleep(ctx, backoff) != nil {
				return
			}
			backoff = min(backoff*2, time.Minute)
			continue
		}
		backoff = time.Second
		c.follow(ctx, notices)
	}
}

// follow rereads the store at each notice from another instance, and every
// resyncInterval in case one was lost. The local copy is trusted from the
// first reread until the subscription ends. A failed reread is retried
// soon; meanwhile the local copy keeps serving, since whoever cannot reach
// the store cannot change it either.
func (c *Credential) follow(ctx context.Context, notices <-chan []byte) {
	defer c.setLive(false)
	next := c.reload(ctx)
	c.setLive(true)
	timer := time.NewTimer(next)
	defer timer.Stop()
	for {
		select {
		case msg, ok := <-notices:
			if !ok {
				return
			}
			if string(msg) == c.id {
				continue
			}
			next = c.reload(ctx)
		case <-timer.C:
			next = c.reload(ctx)
		}
		timer.Reset(next)
	}
}

// reload rereads the store into the local copy and says when to do it
// again.
func (c *Credential) reload(ctx context.Context) time.Duration {
	if _, _, err := c.load(ctx); err != nil {
		if ctx.Err() == nil {
			c.cfg.Logger.Warn("could not reread the stored credential", "credential", c.cfg.Name, "err", err)
		}
		return time.Second
	}
	return resyncInterval
}

func (c *Credential) setLive(live bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.live = live
}
