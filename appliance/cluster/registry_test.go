package cluster_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/100steps/wxappliance/appliance/cluster"
	"github.com/100steps/wxappliance/appliance/poll"
	"github.com/100steps/wxappliance/kv"
	"github.com/100steps/wxappliance/kv/kvtest"
)

func TestNewID(t *testing.T) {
	store := kvtest.Badger(t)
	a, b := cluster.NewID(), cluster.NewID()
	if a == b {
		t.Fatalf("two ids alike: %s", a)
	}
	for _, id := range []string{a, b} {
		if _, err := cluster.NewRegistry(store, id, cluster.RegistryConfig{}); err != nil {
			t.Fatalf("NewID made an id NewRegistry refuses: %v", err)
		}
	}
	for _, bad := range []string{"", "a b", "a/b", "é", strings.Repeat("x", 129)} {
		if _, err := cluster.NewRegistry(store, bad, cluster.RegistryConfig{}); err == nil {
			t.Errorf("NewRegistry accepted the id %q", bad)
		}
	}
}

func TestRegistry(t *testing.T) {
	forEachBackend(t, func(t *testing.T, store kv.Store, _ kv.Bus) {
		ctx := context.Background()
		newReg := func(id string, cfg cluster.RegistryConfig) *cluster.Registry {
			r, err := cluster.NewRegistry(store, id, cfg)
			if err != nil {
				t.Fatal(err)
			}
			return r
		}
		alive := func(r *cluster.Registry, id string) bool {
			ok, err := r.Alive(ctx, id)
			if err != nil {
				t.Fatalf("Alive(%s): %v", id, err)
			}
			return ok
		}

		a := newReg("a-1", cluster.RegistryConfig{})
		if a.Self() != "a-1" || !alive(a, "a-1") {
			t.Fatal("an instance is not itself, or not alive to itself")
		}
		if alive(a, "b-1") || alive(a, "never-was") {
			t.Fatal("an instance that never joined is alive")
		}

		// b joins and runs: a sees it (once a's cached "no" has aged).
		b := newReg("b-1", cluster.RegistryConfig{Interval: 20 * time.Millisecond})
		if err := b.Join(ctx); err != nil {
			t.Fatal(err)
		}
		bctx, stopB := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() { b.Run(bctx) })
		poll.Until(t, "a to see b alive", func() bool { return alive(a, "b-1") })

		// The heartbeat is rewritten: remove it behind b's back (as a flushed
		// or failed-over Redis would) and it comes back.
		if err := store.Delete(ctx, cluster.InstanceKey("b-1")); err != nil {
			t.Fatal(err)
		}
		fresh := newReg("c-1", cluster.RegistryConfig{})
		poll.Until(t, "b's heartbeat to be written again", func() bool {
			_, err := store.Get(ctx, cluster.InstanceKey("b-1"))
			return err == nil
		})
		if !alive(fresh, "b-1") {
			t.Fatal("b is not alive to an instance that never asked before")
		}

		// A clean stop removes the heartbeat at once.
		stopB()
		wg.Wait()
		if _, err := store.Get(ctx, cluster.InstanceKey("b-1")); err != kv.ErrNotFound {
			t.Fatalf("b's heartbeat after a clean stop: %v, want it gone", err)
		}
		poll.Until(t, "a to see b dead", func() bool { return !alive(a, "b-1") })

		// A crash leaves the heartbeat to expire: d joins and never beats
		// again.
		d := newReg("d-1", cluster.RegistryConfig{TTL: time.Second})
		if err := d.Join(ctx); err != nil {
			t.Fatal(err)
		}
		if !alive(fresh, "d-1") {
			t.Fatal("d is not alive right after joining")
		}
		poll.Until(t, "d's heartbeat to expire", func() bool { return !alive(a, "d-1") })
	})
}
