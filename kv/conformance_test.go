package kv_test

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/100steps/wxappliance/kv"
	"github.com/100steps/wxappliance/kv/kvtest"
)

// The same suites run on every implementation: whatever a service relies
// on holds on Badger and on Redis alike. They run in parallel with each
// other, as most of their time is spent waiting for keys to expire.

func TestBadgerConformance(t *testing.T) {
	t.Parallel()
	kvtest.RunStoreTests(t, func(t *testing.T) kv.Store { return kvtest.Badger(t) })
}

// One redis-server serves the whole suite; a prefix per subtest keeps
// their keys apart, which also checks that prefixes do.
func TestRedisConformance(t *testing.T) {
	t.Parallel()
	srv := kvtest.StartRedisServer(t, kvtest.RedisServerOptions{})
	kvtest.RunStoreTests(t, prefixed(srv))
}

func TestRedisClusterConformance(t *testing.T) {
	t.Parallel()
	srv := kvtest.StartRedisServer(t, kvtest.RedisServerOptions{Cluster: true})
	kvtest.RunStoreTests(t, prefixed(srv))
}

func TestRedisSentinelConformance(t *testing.T) {
	t.Parallel()
	srv := kvtest.StartRedisServer(t, kvtest.RedisServerOptions{Sentinel: true, Password: "sentinel-test-pw"})
	kvtest.RunStoreTests(t, prefixed(srv))
}

func TestLocalBusConformance(t *testing.T) {
	t.Parallel()
	kvtest.RunBusTests(t, func(t *testing.T) kv.Bus { return new(kv.LocalBus) })
}

func TestRedisBusConformance(t *testing.T) {
	t.Parallel()
	srv := kvtest.StartRedisServer(t, kvtest.RedisServerOptions{})
	open := prefixed(srv)
	kvtest.RunBusTests(t, func(t *testing.T) kv.Bus { return open(t).(kv.Bus) })
}

func TestRedisClusterBusConformance(t *testing.T) {
	t.Parallel()
	srv := kvtest.StartRedisServer(t, kvtest.RedisServerOptions{Cluster: true})
	open := prefixed(srv)
	kvtest.RunBusTests(t, func(t *testing.T) kv.Bus { return open(t).(kv.Bus) })
}

var prefixes atomic.Int64

func prefixed(srv *kvtest.RedisServer) func(t *testing.T) kv.Store {
	return func(t *testing.T) kv.Store {
		return srv.Open(t, kv.RedisOptions{Prefix: fmt.Sprintf("test%d:", prefixes.Add(1))})
	}
}
