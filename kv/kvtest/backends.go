package kvtest

import (
	"testing"

	"github.com/100steps/wxappliance/kv"
)

// Backend is one kind of store that several instances of the appliance
// share, for tests that run the same scenario on each kind.
type Backend struct {
	Name string
	// Open sets the backend up for a test; each call of join gives one
	// instance its store and bus, as a separate process would have them.
	Open func(t testing.TB) (join func() (kv.Store, kv.Bus))
}

// Backends are Badger (one store and one in-process bus for all instances,
// which then model goroutines of one process) and Redis (each instance
// its own connection to one real redis-server).
var Backends = []Backend{
	{"badger", func(t testing.TB) func() (kv.Store, kv.Bus) {
		store, bus := Badger(t), &kv.LocalBus{}
		return func() (kv.Store, kv.Bus) { return store, bus }
	}},
	{"redis", func(t testing.TB) func() (kv.Store, kv.Bus) {
		server := StartRedisServer(t, RedisServerOptions{})
		return func() (kv.Store, kv.Bus) {
			r := server.Open(t, kv.RedisOptions{})
			return r, r
		}
	}},
}
