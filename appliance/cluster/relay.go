package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/100steps/wxappliance/callback"
	"github.com/100steps/wxappliance/kv"
	"github.com/100steps/wxappliance/rpc"
)

// Local is this instance's RPC server as the relay uses it: *rpc.Server.
type Local interface {
	callback.Subscriber
	Matches(msgType, event string) bool
	Subscriptions() []rpc.Filter
	SubscriptionsChanged() <-chan struct{}
}

var _ Local = (*rpc.Server)(nil)

// RelayConfig is what a Relay needs. Zero durations mean the defaults.
type RelayConfig struct {
	// ID is this instance's id (Registry.Self).
	ID    string
	Store kv.Store
	Bus   kv.Bus
	Local Local
	// AdvertTTL is how long an advertisement lives without a refresh
	// (default 15 s): how long origins may keep sending a crashed
	// instance attempts, each costing them ClaimWait.
	AdvertTTL time.Duration
	// AdvertRefresh is the time between refreshes (default AdvertTTL/3).
	AdvertRefresh time.Duration
	// CacheTTL is how long an origin reuses the advertisements it read
	// (default 2 s). A change notice drops them at once; the TTL bounds how
	// stale they get when a notice is lost.
	CacheTTL time.Duration
	// ClaimWait is how long an origin lets a target take an attempt before
	// withdrawing it and trying the next instance (default 1 s, and never
	// more than half the time left), and then how often it looks in the
	// store for an answer whose notice was lost.
	ClaimWait time.Duration
	// MaxInFlight bounds the attempts this instance delivers for others at
	// once (default 256); beyond it, it declines and the origin moves on.
	MaxInFlight int
	// Logger's lines do not name this instance: give one that does.
	Logger *slog.Logger
}

func (c *RelayConfig) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.AdvertTTL, 15*time.Second)
	if c.AdvertRefresh <= 0 || c.AdvertRefresh >= c.AdvertTTL {
		c.AdvertRefresh = c.AdvertTTL / 3
	}
	def(&c.CacheTTL, 2*time.Second)
	def(&c.ClaimWait, time.Second)
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = 256
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Relay is the callback's Subscriber when several instances share a store:
// a push goes to a local subscriber when one matches, else to an instance
// whose subscribers match, else to the rules. It also serves the other
// instances' attempts. Run it for the instance's life.
type Relay struct {
	cfg   RelayConfig
	id    string
	store kv.Store
	bus   kv.Bus
	local Local
	log   *slog.Logger

	pending pendingAttempts
	turn    atomic.Uint64 // rotates the order of candidate instances
	slots   chan struct{} // attempts being delivered for others

	cacheMu sync.Mutex
	cache   *advertCache
	gen     uint64    // bumped by every change notice
	loading chan bool // a one-slot lock: one store read at a time

	serving   sync.WaitGroup
	listening chan struct{} // closed once the request channel is subscribed
	listenOne sync.Once

	stats stats
}

// advertCache is the advertisements as last read.
type advertCache struct {
	entries map[string]advertEntry
	read    time.Time
	gen     uint64
}

var _ callback.Subscriber = (*Relay)(nil)

// NewRelay returns a Relay for instance cfg.ID.
func NewRelay(cfg RelayConfig) (*Relay, error) {
	if err := validateID(cfg.ID); err != nil {
		return nil, err
	}
	if cfg.Store == nil || cfg.Bus == nil || cfg.Local == nil {
		return nil, errors.New("cluster: a relay needs a store, a bus and the local RPC server")
	}
	cfg.setDefaults()
	return &Relay{
		cfg:       cfg,
		id:        cfg.ID,
		store:     cfg.Store,
		bus:       cfg.Bus,
		local:     cfg.Local,
		log:       cfg.Logger,
		pending:   pendingAttempts{m: map[string]chan answer{}},
		slots:     make(chan struct{}, cfg.MaxInFlight),
		loading:   make(chan bool, 1),
		listening: make(chan struct{}),
	}, nil
}

// Run serves until ctx ends: it listens for attempts and answers on the
// bus (subscribing again whenever the bus drops a subscription, as when
// Redis restarts), follows change notices, and advertises the local
// subscribers. When ctx ends it withdraws the advertisement and returns
// once the attempts it was delivering for others are answered.
func (r *Relay) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for name, loop := range map[string]func(context.Context){
		"relay requests":       r.listenRequests,
		"relay answers":        r.listenAnswers,
		"relay notices":        r.listenNotices,
		"relay advertisements": r.advertise,
	} {
		wg.Go(func() { keepRunning(ctx, r.log, name, loop) })
	}
	wg.Wait()
	r.serving.Wait()
	dctx, cancel := detached(ctx)
	defer cancel()
	if err := r.withdraw(dctx); err != nil {
		r.log.Warn("cluster: could not withdraw this instance's advertisement; it expires by itself", "err", err, "ttl", r.cfg.AdvertTTL)
	}
}

// follow subscribes to channel for as long as ctx lives, subscribing again
// when the bus drops the subscription, and hands each notice to handle,
// which must not block. subscribed runs after every (re)subscription.
func (r *Relay) follow(ctx context.Context, channel string, subscribed func(), handle func([]byte)) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		notices, err := r.bus.Subscribe(ctx, channel)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			r.log.Warn("cluster: could not subscribe; retrying", "channel", channel, "err", err, "retry_in", backoff)
			if sleep(ctx, backoff) != nil {
				return
			}
			backoff = min(backoff*2, 10*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		if subscribed != nil {
			subscribed()
		}
		for msg := range notices {
			handle(msg)
		}
		if ctx.Err() == nil {
			r.log.Info("cluster: bus subscription ended; subscribing again", "channel", channel)
		}
	}
}

func (r *Relay) listenRequests(ctx context.Context) {
	r.follow(ctx, requestChannel+r.id, func() {
		r.listenOne.Do(func() { close(r.listening) })
	}, func(msg []byte) { r.accept(ctx, msg) })
}

func (r *Relay) listenAnswers(ctx context.Context) {
	r.follow(ctx, answerChannel+r.id, nil, r.receiveAnswer)
}

// listenNotices drops the cached advertisements at every change notice
// from another instance, and at every (re)subscription, since notices may
// have been missed meanwhile.
func (r *Relay) listenNotices(ctx context.Context) {
	r.follow(ctx, advertChannel, r.invalidate, func(msg []byte) {
		if string(msg) != r.id {
			r.invalidate()
		}
	})
}

func (r *Relay) invalidate() {
	r.cacheMu.Lock()
	r.gen++
	r.cacheMu.Unlock()
}

// advertise keeps this instance's entry in the advertisement record equal
// to its subscribers' filters: at once on a change, and every
// AdvertRefresh so it does not expire. It starts once attempts can be
// received.
func (r *Relay) advertise(ctx context.Context) {
	select {
	case <-r.listening:
	case <-ctx.Done():
		return
	}
	var (
		shown   rpc.Filter
		showing bool
		retry   <-chan time.Time
	)
	refresh := time.NewTicker(r.cfg.AdvertRefresh)
	defer refresh.Stop()
	for {
		changed := r.local.SubscriptionsChanged()
		want, any := union(r.local.Subscriptions())
		if any || showing {
			err := updateAdvert(ctx, r.store, 2*r.cfg.AdvertTTL, func(m map[string]advertEntry) {
				if !any {
					delete(m, r.id)
					return
				}
				m[r.id] = advertEntry{Expires: time.Now().Add(r.cfg.AdvertTTL).UnixMilli(), Filter: want}
			})
			switch {
			case ctx.Err() != nil:
				return
			case err != nil:
				r.log.Warn("cluster: could not advertise this instance's subscribers; retrying", "err", err)
				retry = time.After(time.Second)
			default:
				retry = nil
				if any != showing || !sameFilter(want, shown) {
					r.notify(ctx)
					r.log.Info("cluster: advertised subscribers", "subscribed", any, "msg_types", want.MsgTypes, "events", want.Events)
				}
				shown, showing = want, any
			}
		}
		select {
		case <-changed:
		case <-refresh.C:
		case <-retry:
		case <-ctx.Done():
			return
		}
	}
}

// notify tells the other instances to read the advertisements again.
func (r *Relay) notify(ctx context.Context) {
	if err := r.bus.Publish(ctx, advertChannel, []byte(r.id)); err != nil {
		r.log.Warn("cluster: could not announce the advertisement change; others see it within their cache TTL", "err", err)
	}
}

// withdraw removes this instance's advertisement.
func (r *Relay) withdraw(ctx context.Context) error {
	a, _, err := readAdvert(ctx, r.store)
	if err != nil {
		return err
	}
	if _, ok := a.Instances[r.id]; !ok {
		return nil
	}
	if err := updateAdvert(ctx, r.store, 2*r.cfg.AdvertTTL, func(m map[string]advertEntry) { delete(m, r.id) }); err != nil {
		return err
	}
	r.notify(ctx)
	return nil
}

// advertisements returns the advertisements, from the cache while it is
// fresh and no notice dropped it.
func (r *Relay) advertisements(ctx context.Context) (map[string]advertEntry, error) {
	for {
		r.cacheMu.Lock()
		c, gen := r.cache, r.gen
		r.cacheMu.Unlock()
		if c != nil && c.gen == gen && time.Since(c.read) < r.cfg.CacheTTL {
			return c.entries, nil
		}
		// One reader at a time; the others wait for its result.
		select {
		case r.loading <- true:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		r.cacheMu.Lock()
		fresh := r.cache != nil && r.cache != c && r.cache.gen == r.gen && time.Since(r.cache.read) < r.cfg.CacheTTL
		r.cacheMu.Unlock()
		if fresh {
			<-r.loading
			continue
		}
		read := time.Now()
		a, _, err := readAdvert(ctx, r.store)
		if err == nil {
			r.cacheMu.Lock()
			r.cache = &advertCache{entries: a.Instances, read: read, gen: gen}
			r.cacheMu.Unlock()
		}
		<-r.loading
		return a.Instances, err
	}
}

// Stats counts what the relay did, for the operator.
type Stats struct {
	Local     uint64 // pushes delivered to a subscriber of this instance
	Forwarded uint64 // attempts sent to another instance
	Remote    uint64 // attempts another instance delivered and answered
	Declined  uint64 // attempts another instance declined (its subscriber left, or it was busy)
	Withdrawn uint64 // attempts withdrawn because the target did not take them in time
	Unsettled uint64 // attempts taken by a target that gave no answer before the deadline
	Checked   uint64 // looks in the store at an attempt the origin had no answer to yet
	Polled    uint64 // answers found there, their notice having been lost
	Served    uint64 // attempts from other instances delivered to a local subscriber
	Refused   uint64 // attempts from other instances declined here
	Dropped   uint64 // answers that came after their origin stopped waiting
}

type stats struct {
	local, forwarded, remote, declined, withdrawn, unsettled, checked, polled, served, refused, dropped atomic.Uint64
}

// Stats returns the counters since the relay was made.
func (r *Relay) Stats() Stats {
	s := &r.stats
	return Stats{
		Local: s.local.Load(), Forwarded: s.forwarded.Load(), Remote: s.remote.Load(),
		Declined: s.declined.Load(), Withdrawn: s.withdrawn.Load(), Unsettled: s.unsettled.Load(),
		Checked: s.checked.Load(), Polled: s.polled.Load(), Served: s.served.Load(), Refused: s.refused.Load(), Dropped: s.dropped.Load(),
	}
}

// pendingAttempts are the attempts this instance waits on, by id.
type pendingAttempts struct {
	mu sync.Mutex
	m  map[string]chan answer
}

func (p *pendingAttempts) add(id string) chan answer {
	ch := make(chan answer, 1)
	p.mu.Lock()
	p.m[id] = ch
	p.mu.Unlock()
	return ch
}

func (p *pendingAttempts) remove(id string) {
	p.mu.Lock()
	delete(p.m, id)
	p.mu.Unlock()
}

// deliver hands a to its waiter, if one still waits.
func (p *pendingAttempts) deliver(a answer) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	ch, ok := p.m[a.ID]
	if !ok {
		return false
	}
	delete(p.m, a.ID)
	ch <- a // never blocks: one answer per attempt, and room for one
	return true
}

// receiveAnswer takes an answer from the bus to the attempt waiting for it.
func (r *Relay) receiveAnswer(msg []byte) {
	var a answer
	if err := json.Unmarshal(msg, &a); err != nil || a.ID == "" {
		r.log.Warn("cluster: unreadable answer on the bus", "err", err)
		return
	}
	if !r.pending.deliver(a) {
		r.stats.dropped.Add(1)
		r.log.Info("cluster: answer came after its origin stopped waiting; dropped", "attempt", a.ID, "outcome", a.Outcome)
	}
}
