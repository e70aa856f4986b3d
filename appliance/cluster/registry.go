package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/100steps/wxappliance/kv"
)

// RegistryConfig tunes a Registry. Zero values mean the defaults.
type RegistryConfig struct {
	// TTL is how long an instance counts as alive after its last
	// heartbeat (default 15 s): how long a crashed instance's claims wait
	// before another instance takes them over.
	TTL time.Duration
	// Interval is the time between heartbeats (default TTL/3), so that
	// two may fail before the instance is taken for dead.
	Interval time.Duration
	// AliveCache is how long an answer of Alive about another instance is
	// reused (default 1 s): the callback asks at every poll while a retry
	// waits, and one store read a second per instance is enough.
	AliveCache time.Duration
	// Logger's lines do not name this instance: give one that does.
	Logger *slog.Logger
}

func (c *RegistryConfig) setDefaults() {
	if c.TTL <= 0 {
		c.TTL = 15 * time.Second
	}
	if c.Interval <= 0 || c.Interval >= c.TTL {
		c.Interval = c.TTL / 3
	}
	if c.AliveCache <= 0 {
		c.AliveCache = time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Registry is this instance's membership among those sharing a store: a
// heartbeat record with a TTL under instanceKeyPrefix+id, which Alive reads
// for the others. It answers the callback's question of whether the
// instance that claimed a message may still answer it.
type Registry struct {
	store kv.Store
	id    string
	cfg   RegistryConfig
	log   *slog.Logger

	mu    sync.Mutex
	cache map[string]aliveAnswer
}

type aliveAnswer struct {
	alive bool
	at    time.Time
}

// maxAliveCache bounds the cache of Alive answers; past it, it starts
// again empty.
const maxAliveCache = 1024

// NewRegistry returns the Registry of instance id over store. Call Join
// before serving and Run for the instance's life.
func NewRegistry(store kv.Store, id string, cfg RegistryConfig) (*Registry, error) {
	if err := validateID(id); err != nil {
		return nil, err
	}
	if store == nil {
		return nil, errors.New("cluster: a registry needs a store")
	}
	cfg.setDefaults()
	return &Registry{store: store, id: id, cfg: cfg, log: cfg.Logger, cache: map[string]aliveAnswer{}}, nil
}

// Self is this instance's id.
func (r *Registry) Self() string { return r.id }

// Join writes the first heartbeat, so that the other instances see this one
// alive before it claims anything. Run keeps trying when it fails.
func (r *Registry) Join(ctx context.Context) error {
	return r.beat(ctx)
}

func (r *Registry) beat(ctx context.Context) error {
	record := fmt.Appendf(nil, `{"at":%q}`, time.Now().UTC().Format(time.RFC3339))
	if err := r.store.Put(ctx, instanceKeyPrefix+r.id, record, r.cfg.TTL); err != nil {
		return fmt.Errorf("cluster: heartbeat: %w", err)
	}
	return nil
}

// Run refreshes the heartbeat until ctx ends, then deletes it: a clean
// stop is seen at once, a crash after TTL.
func (r *Registry) Run(ctx context.Context) {
	keepRunning(ctx, r.log, "heartbeat", r.heartbeat)
	dctx, cancel := detached(ctx)
	defer cancel()
	if err := r.store.Delete(dctx, instanceKeyPrefix+r.id); err != nil {
		r.log.Warn("cluster: could not remove this instance's heartbeat; it expires by itself", "err", err, "ttl", r.cfg.TTL)
	}
}

func (r *Registry) heartbeat(ctx context.Context) {
	failing := false
	for {
		err := r.beat(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil && !failing:
			r.log.Warn("cluster: heartbeat failed; other instances take this one for dead if it keeps failing", "err", err, "ttl", r.cfg.TTL)
		case err == nil && failing:
			r.log.Info("cluster: heartbeat works again")
		}
		failing = err != nil
		if sleep(ctx, r.cfg.Interval) != nil {
			return
		}
	}
}

// Alive reports whether instance id has a live heartbeat. This instance is
// always alive to itself. Answers about others are reused for AliveCache;
// an error (the store unreachable) is not an answer and is not kept.
func (r *Registry) Alive(ctx context.Context, id string) (bool, error) {
	if id == r.id {
		return true, nil
	}
	now := time.Now()
	r.mu.Lock()
	a, ok := r.cache[id]
	r.mu.Unlock()
	if ok && now.Sub(a.at) < r.cfg.AliveCache {
		return a.alive, nil
	}
	_, err := r.store.Get(ctx, instanceKeyPrefix+id)
	alive := err == nil
	if err != nil && !errors.Is(err, kv.ErrNotFound) {
		return false, fmt.Errorf("cluster: is %s alive: %w", id, err)
	}
	r.mu.Lock()
	if len(r.cache) >= maxAliveCache {
		clear(r.cache)
	}
	r.cache[id] = aliveAnswer{alive: alive, at: now}
	r.mu.Unlock()
	return alive, nil
}
