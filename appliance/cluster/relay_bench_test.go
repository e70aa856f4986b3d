package cluster_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/100steps/wxappliance/callback"
	"github.com/100steps/wxappliance/kv/kvtest"
	"github.com/100steps/wxappliance/rpc/client"
)

// BenchmarkRelay measures a push answered by a backend on the instance it
// landed on (local) and on another one (forwarded), one at a time and
// many at once.
func BenchmarkRelay(b *testing.B) {
	for _, be := range kvtest.Backends {
		for _, remote := range []bool{false, true} {
			for _, parallel := range []bool{false, true} {
				name := fmt.Sprintf("%s/remote=%v/parallel=%v", be.Name, remote, parallel)
				b.Run(name, func(b *testing.B) {
					store, bus := be.Open(b)()
					c := newCluster(b, store, bus)
					a, o := c.start("a"), c.start("o")
					target := a
					if remote {
						target = o
					}
					target.subscribe(client.Filter{}, func(m callback.Message) (any, error) { return textReply("ok"), nil })
					if remote {
						a.waitCandidates("text", "", o)
					}
					msg := textMsg("1", "hi")
					deliver := func() {
						ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
						defer cancel()
						if reply, ok, err := a.relay.Deliver(ctx, msg); !ok || err != nil || reply == nil {
							b.Errorf("%+v %v %v", reply, ok, err)
						}
					}
					b.ResetTimer()
					if !parallel {
						for b.Loop() {
							deliver()
						}
						return
					}
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							deliver()
						}
					})
				})
			}
		}
	}
}
