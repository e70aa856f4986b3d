package appliance

import (
	"fmt"
	"log/slog"
	"strings"

	"github.com/100steps/wxappliance/kv"
)

// Storage backends.
const (
	// BackendBadger keeps everything in storage.dir: one instance, no setup.
	BackendBadger = "badger"
	// BackendRedis shares state through Redis between any number of
	// instances behind a load balancer.
	BackendRedis = "redis"
)

// StorageConfig is [storage].
type StorageConfig struct {
	Backend string `toml:"backend"`
	Dir     string `toml:"dir"`
	// MinFree is the free space below which Badger refuses writes (503)
	// instead of crashing on a full disk; "0" turns the floor off.
	MinFree ByteSize    `toml:"min_free"`
	Redis   RedisConfig `toml:"redis"`
}

// BadgerOptions are the options of the Badger store in storage.dir.
func (s StorageConfig) BadgerOptions(log *slog.Logger) kv.BadgerOptions {
	floor := int64(s.MinFree)
	if floor == 0 {
		floor = -1 // kv's zero means its default; the config's means none
	}
	return kv.BadgerOptions{Logger: log, MinFree: floor}
}

// RedisConfig is [storage.redis], go-redis's options as the config spells
// them. Zero timeouts and pool size take go-redis's from the URL, else the
// store's defaults (one second per command, 32 connections).
type RedisConfig struct {
	// URL is redis://[user:password@]host:port/db, or rediss:// for TLS;
	// WXAPPLIANCE_REDIS_URL wins over it, password included.
	URL    string `toml:"url"`
	Prefix string `toml:"prefix"`

	SentinelAddrs    []string `toml:"sentinel_addrs"`
	MasterName       string   `toml:"master_name"`
	SentinelPassword string   `toml:"sentinel_password"`
	ClusterAddrs     []string `toml:"cluster_addrs"`

	DialTimeout  Duration `toml:"dial_timeout"`
	ReadTimeout  Duration `toml:"read_timeout"`
	WriteTimeout Duration `toml:"write_timeout"`
	PoolTimeout  Duration `toml:"pool_timeout"`
	PoolSize     int      `toml:"pool_size"`
}

// Shared reports whether the store is shared with other instances.
func (s StorageConfig) Shared() bool { return s.Backend == BackendRedis }

func (s StorageConfig) validate(bad func(key, format string, args ...any)) {
	switch s.Backend {
	case BackendBadger:
		if strings.TrimSpace(s.Dir) == "" {
			bad("storage.dir", "must not be empty")
		}
		return
	case BackendRedis:
	default:
		bad("storage.backend", "want %q or %q, got %q", BackendBadger, BackendRedis, s.Backend)
		return
	}
	r := s.Redis
	switch {
	case r.URL == "":
		bad("storage.redis.url", "must be set for storage.backend = \"redis\" (or WXAPPLIANCE_REDIS_URL), e.g. redis://127.0.0.1:6379/0")
	case !strings.HasPrefix(r.URL, "redis://") && !strings.HasPrefix(r.URL, "rediss://"):
		// The URL may hold a password: never repeat it.
		bad("storage.redis.url", "want redis://... or rediss://...")
	}
	if len(r.SentinelAddrs) > 0 && len(r.ClusterAddrs) > 0 {
		bad("storage.redis.cluster_addrs", "set sentinel_addrs or cluster_addrs, not both")
	}
	if len(r.SentinelAddrs) > 0 && r.MasterName == "" {
		bad("storage.redis.master_name", "must be set with sentinel_addrs")
	}
	if r.Prefix == "" {
		bad("storage.redis.prefix", "must not be empty: every key starts with it")
	}
	for key, d := range map[string]Duration{"dial_timeout": r.DialTimeout, "read_timeout": r.ReadTimeout, "write_timeout": r.WriteTimeout, "pool_timeout": r.PoolTimeout} {
		if d < 0 {
			bad("storage.redis."+key, "must not be negative")
		}
	}
	if r.PoolSize < 0 {
		bad("storage.redis.pool_size", "must not be negative")
	}
}

// OpenRedis opens the shared store; the connection is lazy, so a Redis that
// is down at start makes the appliance start unready, not fail.
func OpenRedis(cfg RedisConfig, log *slog.Logger) (*kv.Redis, error) {
	r, err := kv.NewRedis(kv.RedisOptions{
		URL:              cfg.URL,
		Prefix:           cfg.Prefix,
		SentinelAddrs:    cfg.SentinelAddrs,
		MasterName:       cfg.MasterName,
		SentinelPassword: cfg.SentinelPassword,
		ClusterAddrs:     cfg.ClusterAddrs,
		DialTimeout:      cfg.DialTimeout.D(),
		ReadTimeout:      cfg.ReadTimeout.D(),
		WriteTimeout:     cfg.WriteTimeout.D(),
		PoolTimeout:      cfg.PoolTimeout.D(),
		PoolSize:         cfg.PoolSize,
		Logger:           log,
	})
	if err != nil {
		return nil, fmt.Errorf("storage.redis: %w", err)
	}
	return r, nil
}
