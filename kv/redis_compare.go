package kv

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"
)

// The compare operations read and write one key in a Lua script, which
// Redis runs without interleaving any other command: the atomicity Badger
// gets from conflict detection. One key per script keeps them valid on
// Cluster. GET on a missing key gives false in Lua, which equals no
// string, so a missing key matches no old value.
var (
	// KEYS[1] key, ARGV[1] old, ARGV[2] new value, ARGV[3] ttl in ms or "0".
	casScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if ARGV[3] == '0' then
  redis.call('SET', KEYS[1], ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 1
`)
	// KEYS[1] key, ARGV[1] old.
	cadScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
return 1
`)
)

// CompareAndSwap sets key to value when it currently holds exactly old.
func (r *Redis) CompareAndSwap(ctx context.Context, key string, old, value []byte, ttl time.Duration) (bool, error) {
	if err := r.checkKey(ctx, key); err != nil {
		return false, err
	}
	if ttl < 0 {
		return false, errNegativeTTL
	}
	n, err := casScript.Run(ctx, r.client, []string{r.prefix + key}, old, value, ttlMillis(ttl)).Int()
	if err != nil {
		return false, r.wrap(ctx, "compare and swap", err)
	}
	return n == 1, nil
}

// CompareAndDelete deletes key when it currently holds exactly old.
func (r *Redis) CompareAndDelete(ctx context.Context, key string, old []byte) (bool, error) {
	if err := r.checkKey(ctx, key); err != nil {
		return false, err
	}
	n, err := cadScript.Run(ctx, r.client, []string{r.prefix + key}, old).Int()
	if err != nil {
		return false, r.wrap(ctx, "compare and delete", err)
	}
	return n == 1, nil
}
