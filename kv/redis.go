package kv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultRedisPrefix is the key and channel prefix when RedisOptions.Prefix
// is empty.
const DefaultRedisPrefix = "wxappliance:"

// Defaults for RedisOptions. go-redis's own defaults (5 s dial and read
// timeouts, five dial attempts, three retries) let a single call to a dead
// or stalled Redis take half a minute; a web request must fail within about
// a second and show 503 instead.
const (
	defaultRedisDialTimeout  = time.Second
	defaultRedisReadTimeout  = time.Second
	defaultRedisWriteTimeout = time.Second
	defaultRedisPoolTimeout  = 2 * time.Second
	defaultRedisPoolSize     = 32
	// Two dial attempts 100 ms apart ride out a dropped SYN without
	// doubling the wait when Redis is really gone.
	redisDialAttempts = 2
)

// RedisOptions configures NewRedis. Only URL is required.
type RedisOptions struct {
	// URL is redis://[[user]:password@]host[:port][/db], or rediss:// for
	// TLS. Query parameters accepted by go-redis's ParseURL (protocol=2,
	// client_name=..., timeouts) apply too. With SentinelAddrs or
	// ClusterAddrs, only the URL's scheme, credentials and database are
	// used, not its host.
	URL string
	// Prefix is put before every key and channel name, so that several
	// deployments can share one Redis. Empty means DefaultRedisPrefix.
	Prefix string

	// SentinelAddrs and MasterName select Sentinel: the Sentinels are asked
	// which server is the master. SentinelPassword authenticates to the
	// Sentinels themselves when they require it.
	SentinelAddrs    []string
	MasterName       string
	SentinelPassword string

	// ClusterAddrs selects Redis Cluster: some nodes to discover the rest
	// from. A cluster has only database 0.
	ClusterAddrs []string

	// DialTimeout, ReadTimeout and WriteTimeout bound each connection
	// attempt and each command; zero takes the URL's value or one second.
	// PoolTimeout bounds the wait for a free connection when all PoolSize
	// are busy; zero takes the URL's value or two seconds.
	DialTimeout  time.Duration
	ReadTimeout  time.Duration
	WriteTimeout time.Duration
	PoolTimeout  time.Duration
	// PoolSize is the number of connections per Redis node; zero takes the
	// URL's value or 32.
	PoolSize int

	// Logger receives the store's own warnings. Nil discards them.
	Logger *slog.Logger
}

// Redis is a Store and a Bus on Redis, shared by every instance that uses
// the same server and prefix. Every operation touches one key, so it works
// on a single server, behind Sentinel, and on Cluster. It is safe for
// concurrent use.
//
// Durability is Redis's: without AOF (appendonly yes, appendfsync everysec)
// a Redis restart loses everything, which logs everybody out.
//
// An ErrUnavailable from a write means it may or may not have happened:
// a command sent just before Redis stalled can still run when it wakes.
// Lease and token code must treat it as "unknown", not "lost".
//
// Redis 6.2 or later is needed (GETDEL).
type Redis struct {
	client redis.UniversalClient
	prefix string
	log    *slog.Logger
	desc   string // mode and addresses, never credentials
	// readTimeout bounds the wait for a subscription's confirmation.
	readTimeout time.Duration

	closed atomic.Bool
	// done is closed by Close to end the subscriptions' goroutines.
	done chan struct{}
}

var (
	_ Store = (*Redis)(nil)
	_ Bus   = (*Redis)(nil)
)

// NewRedis connects to Redis as opts says. It does not wait for Redis to
// answer: the store starts even while Redis is down, its operations fail
// with ErrUnavailable meanwhile and recover by themselves. Call Ping to
// find out at once. Errors never contain the password.
func NewRedis(opts RedisOptions) (*Redis, error) {
	uo, desc, err := universalOptions(opts)
	if err != nil {
		return nil, err
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	prefix := opts.Prefix
	if prefix == "" {
		prefix = DefaultRedisPrefix
	}
	return &Redis{
		client: redis.NewUniversalClient(uo),
		prefix: prefix,
		log:    logger,
		desc:   desc,
		done:   make(chan struct{}),

		readTimeout: uo.ReadTimeout,
	}, nil
}

// universalOptions turns opts into go-redis options and a description of
// the deployment that is safe to log.
func universalOptions(opts RedisOptions) (*redis.UniversalOptions, string, error) {
	if opts.URL == "" {
		return nil, "", errors.New("storage.redis.url is empty")
	}
	po, err := parseRedisURL(opts.URL, opts.SentinelPassword)
	if err != nil {
		return nil, "", err
	}
	uo := &redis.UniversalOptions{
		Addrs:      []string{po.Addr},
		ClientName: po.ClientName,
		DB:         po.DB,
		Protocol:   po.Protocol,
		Username:   po.Username,
		Password:   po.Password,
		TLSConfig:  po.TLSConfig,

		DialTimeout:  pick(opts.DialTimeout, po.DialTimeout, defaultRedisDialTimeout),
		ReadTimeout:  pick(opts.ReadTimeout, po.ReadTimeout, defaultRedisReadTimeout),
		WriteTimeout: pick(opts.WriteTimeout, po.WriteTimeout, defaultRedisWriteTimeout),
		PoolTimeout:  pick(opts.PoolTimeout, po.PoolTimeout, defaultRedisPoolTimeout),
		PoolSize:     pick(opts.PoolSize, po.PoolSize, defaultRedisPoolSize),
		// A request's deadline must cut a slow command short.
		ContextTimeoutEnabled: true,
		DialerRetries:         redisDialAttempts,
		// go-redis retries a command whose reply was lost. For Take,
		// PutIfAbsent and the compare operations the lost reply may have
		// been a success, and the retry would then report a loss that did
		// not happen: a caller that won a lease would believe someone else
		// holds it. Failing with ErrUnavailable is honest; stale pooled
		// connections are weeded out by go-redis's health check instead.
		MaxRetries: -1,
	}
	desc := "redis " + po.Addr
	switch {
	case len(opts.SentinelAddrs) > 0 && len(opts.ClusterAddrs) > 0:
		return nil, "", errors.New("storage.redis: set sentinel addresses or cluster addresses, not both")
	case len(opts.SentinelAddrs) > 0 || opts.MasterName != "":
		if len(opts.SentinelAddrs) == 0 || opts.MasterName == "" {
			return nil, "", errors.New("storage.redis: Sentinel needs both the sentinel addresses and the master name")
		}
		uo.Addrs = opts.SentinelAddrs
		uo.MasterName = opts.MasterName
		uo.SentinelPassword = opts.SentinelPassword
		desc = fmt.Sprintf("redis sentinel %s master %q", strings.Join(opts.SentinelAddrs, ","), opts.MasterName)
	case len(opts.ClusterAddrs) > 0:
		if po.DB != 0 {
			return nil, "", fmt.Errorf("storage.redis.url: database %d: Redis Cluster has only database 0", po.DB)
		}
		uo.Addrs = opts.ClusterAddrs
		uo.IsClusterMode = true
		desc = "redis cluster " + strings.Join(opts.ClusterAddrs, ",")
	}
	if po.TLSConfig != nil {
		desc += " (TLS)"
	}
	return uo, desc, nil
}

// parseRedisURL is redis.ParseURL with errors that cannot reveal a
// password: url.Parse quotes the whole URL in its errors, and a password
// containing '/' or '#' moves the rest of it into the host or path that
// other messages quote.
func parseRedisURL(raw string, secrets ...string) (*redis.Options, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, errors.New("storage.redis.url is not a valid URL (details withheld: it may contain a password; percent-encode special characters in the password)")
	}
	if pw, ok := u.User.Password(); ok {
		secrets = append(secrets, pw)
	}
	if u.User != nil {
		secrets = append(secrets, u.User.Username())
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return nil, errors.New("storage.redis.url: the scheme must be redis:// or rediss://")
	}
	if strings.Contains(u.Path+u.RawQuery+u.Fragment, "@") {
		// A '/', '?' or '#' in the password ended the user:password part
		// early and the rest landed in the path, query or fragment, where
		// go-redis's errors would quote it.
		return nil, errors.New("storage.redis.url: '@' after the host; percent-encode '/', '?', '#' and '%' in the password")
	}
	if db := strings.Trim(u.Path, "/"); db != "" {
		if _, err := strconv.Atoi(db); err != nil {
			return nil, errors.New("storage.redis.url: the path must be empty or a database number such as /0")
		}
	}
	o, err := redis.ParseURL(raw)
	if err != nil {
		return nil, errors.New("storage.redis.url: " + redact(err.Error(), secrets...))
	}
	return o, nil
}

// redact replaces every secret in s, and its percent-encoded form.
func redact(s string, secrets ...string) string {
	for _, sec := range secrets {
		if sec == "" {
			continue
		}
		s = strings.ReplaceAll(s, sec, "[redacted]")
		s = strings.ReplaceAll(s, url.QueryEscape(sec), "[redacted]")
		s = strings.ReplaceAll(s, url.PathEscape(sec), "[redacted]")
	}
	return s
}

// pick returns the first of v, fromURL and def that is positive: a
// negative value from the URL would disable a timeout, and a command to
// a stalled Redis would then hang.
func pick[T int | time.Duration](v, fromURL, def T) T {
	switch {
	case v > 0:
		return v
	case fromURL > 0:
		return fromURL
	}
	return def
}

// String describes the deployment without credentials, for logs.
func (r *Redis) String() string { return r.desc }

// Ping checks that Redis answers, within ctx and the read timeout.
func (r *Redis) Ping(ctx context.Context) error {
	if err := r.check(ctx); err != nil {
		return err
	}
	return r.wrap(ctx, "ping", r.client.Ping(ctx).Err())
}

// readyTimeout bounds Ready, which has no context of its own.
const readyTimeout = 2 * time.Second

// Ready reports whether Redis answers, for readiness probes. It waits at
// most two seconds.
func (r *Redis) Ready() error {
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	return r.Ping(ctx)
}

// Close closes the connections and ends every subscription. It is safe to
// call more than once.
func (r *Redis) Close() error {
	if r.closed.Swap(true) {
		return nil
	}
	close(r.done)
	if err := r.client.Close(); err != nil {
		return fmt.Errorf("kv: close %s: %w", r.desc, err)
	}
	return nil
}

// Get returns the value of key, or ErrNotFound.
func (r *Redis) Get(ctx context.Context, key string) ([]byte, error) {
	if err := r.checkKey(ctx, key); err != nil {
		return nil, err
	}
	val, err := r.client.Get(ctx, r.prefix+key).Bytes()
	if err != nil {
		return nil, r.wrap(ctx, "get", err)
	}
	return val, nil
}

// Put sets key to value, replacing any previous value and expiry.
func (r *Redis) Put(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if err := r.checkKey(ctx, key); err != nil {
		return err
	}
	if ttl < 0 {
		return errNegativeTTL
	}
	return r.wrap(ctx, "put", r.client.Set(ctx, r.prefix+key, value, roundTTL(ttl)).Err())
}

// Delete removes key. Deleting a missing key is not an error.
func (r *Redis) Delete(ctx context.Context, key string) error {
	if err := r.checkKey(ctx, key); err != nil {
		return err
	}
	return r.wrap(ctx, "delete", r.client.Del(ctx, r.prefix+key).Err())
}

// Take returns the value of key and deletes it with GETDEL (Redis 6.2),
// which Redis runs as one step.
func (r *Redis) Take(ctx context.Context, key string) ([]byte, error) {
	if err := r.checkKey(ctx, key); err != nil {
		return nil, err
	}
	val, err := r.client.GetDel(ctx, r.prefix+key).Bytes()
	if err != nil {
		return nil, r.wrap(ctx, "take", err)
	}
	return val, nil
}

// PutIfAbsent sets key with SET NX, which Redis runs as one step.
func (r *Redis) PutIfAbsent(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	if err := r.checkKey(ctx, key); err != nil {
		return false, err
	}
	if ttl < 0 {
		return false, errNegativeTTL
	}
	stored, err := r.client.SetNX(ctx, r.prefix+key, value, roundTTL(ttl)).Result()
	if err != nil {
		return false, r.wrap(ctx, "put if absent", err)
	}
	return stored, nil
}

// roundTTL rounds a positive ttl up to whole milliseconds, Redis's
// granularity, so that the key lives at least ttl. go-redis truncates.
func roundTTL(ttl time.Duration) time.Duration {
	if rem := ttl % time.Millisecond; rem != 0 {
		ttl += time.Millisecond - rem
	}
	return ttl
}

// ttlMillis is ttl as the PX argument of the scripts; "0" means none.
func ttlMillis(ttl time.Duration) string {
	return fmt.Sprint(roundTTL(ttl).Milliseconds())
}

func (r *Redis) checkKey(ctx context.Context, key string) error {
	if err := r.check(ctx); err != nil {
		return err
	}
	if key == "" {
		return errEmptyKey
	}
	return nil
}

func (r *Redis) check(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if r.closed.Load() {
		return ErrClosed
	}
	return nil
}

// wrap maps go-redis's errors onto the Store's and names the operation.
func (r *Redis) wrap(ctx context.Context, op string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, redis.Nil):
		return ErrNotFound
	case ctx.Err() != nil:
		// The caller gave up; whatever go-redis made of the deadline (a
		// socket timeout, usually) is a consequence of that.
		return ctx.Err()
	case deadlinePassed(ctx):
		// The socket deadline, set to ctx's, can fire a moment before
		// ctx's own timer marks it done.
		return context.DeadlineExceeded
	case errors.Is(err, redis.ErrClosed):
		if r.closed.Load() {
			return ErrClosed
		}
	case redis.IsOOMError(err):
		// maxmemory reached with a noeviction policy: writes are refused,
		// reads still work, exactly what ErrNoSpace promises.
		return fmt.Errorf("kv: %s: %w: %w", op, ErrNoSpace, err)
	}
	if unavailable(err) {
		return fmt.Errorf("kv: %s: %w: %w", op, ErrUnavailable, err)
	}
	return fmt.Errorf("kv: %s: %w", op, err)
}

func deadlinePassed(ctx context.Context) bool {
	d, ok := ctx.Deadline()
	return ok && !time.Now().Before(d)
}

// unavailable reports whether err means Redis could not be reached or
// cannot serve right now, as opposed to a command Redis rejected.
func unavailable(err error) bool {
	var rerr redis.Error
	if !errors.As(err, &rerr) {
		// Not a reply from Redis: refused, reset, timed out, TLS failure,
		// no free connection in the pool.
		return true
	}
	switch {
	case redis.IsLoadingError(err), redis.IsReadOnlyError(err),
		redis.IsClusterDownError(err), redis.IsTryAgainError(err),
		redis.IsMasterDownError(err), redis.IsMaxClientsError(err),
		redis.IsNoReplicasError(err),
		// Wrong or missing credentials keep every instance from working
		// until someone fixes the configuration: the same 503 to a client.
		redis.IsAuthError(err), redis.IsPermissionError(err),
		redis.HasErrorPrefix(err, "BUSY"):
		return true
	}
	return false
}
