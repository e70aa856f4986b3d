package kv_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/100steps/wxappliance/kv"
	"github.com/100steps/wxappliance/kv/kvtest"
)

// BenchmarkStores compares the backends on the operations a login and a
// callback make: one caller at a time (latency) and GOMAXPROCS callers
// (throughput). Redis runs on loopback, so its numbers are a floor: a
// network hop adds its round trip to each operation.
func BenchmarkStores(b *testing.B) {
	backends := []struct {
		name string
		open func(testing.TB) kv.Store
	}{
		{"badger", func(tb testing.TB) kv.Store { return kvtest.Badger(tb) }},
		{"redis", func(tb testing.TB) kv.Store { return kvtest.Redis(tb) }},
	}
	value := make([]byte, 200) // about a session record
	for _, be := range backends {
		b.Run(be.name, func(b *testing.B) {
			s := be.open(b)
			ctx := b.Context()
			if err := s.Put(ctx, "hot", value, 0); err != nil {
				b.Fatal(err)
			}
			b.Run("Get", func(b *testing.B) {
				for b.Loop() {
					if _, err := s.Get(ctx, "hot"); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("Put", func(b *testing.B) {
				i := 0
				for b.Loop() {
					i++
					if err := s.Put(ctx, fmt.Sprintf("put-%d", i%1000), value, time.Hour); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("PutIfAbsent", func(b *testing.B) {
				i := 0
				for b.Loop() {
					i++
					if _, err := s.PutIfAbsent(ctx, fmt.Sprintf("pia-%s-%d", b.Name(), i), value, time.Minute); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("Get/parallel", func(b *testing.B) {
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if _, err := s.Get(ctx, "hot"); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
			b.Run("PutIfAbsent/parallel", func(b *testing.B) {
				var n atomic.Int64
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if _, err := s.PutIfAbsent(ctx, fmt.Sprintf("ppia-%d", n.Add(1)), value, time.Minute); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		})
	}
}
