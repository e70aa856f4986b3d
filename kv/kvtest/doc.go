// Package kvtest is test support for code that uses package kv: stores on
// a temporary Badger directory or a private redis-server, a redis-server
// that tests can stop, restart and kill, and the conformance suites that
// every kv.Store and kv.Bus must pass.
//
// Redis tests need Debian's redis-server. Where it is missing they are
// skipped with a message, unless WXAPPLIANCE_REQUIRE_REDIS=1 (as in CI)
// makes that a failure.
package kvtest

import (
	"testing"

	"github.com/100steps/wxappliance/kv"
)

// Badger opens a Badger store in a temporary directory, closed when the
// test ends.
func Badger(t testing.TB) *kv.Badger {
	t.Helper()
	b, err := kv.OpenBadger(t.TempDir(), kv.BadgerOptions{})
	if err != nil {
		t.Fatalf("kvtest: OpenBadger: %v", err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("kvtest: closing Badger: %v", err)
		}
	})
	return b
}

// Redis starts a fresh redis-server for the test and returns a store on
// it with the default prefix and generous timeouts (see RedisServer.Open),
// closed when the test ends.
func Redis(t testing.TB) *kv.Redis {
	t.Helper()
	return StartRedisServer(t, RedisServerOptions{}).Open(t, kv.RedisOptions{})
}
