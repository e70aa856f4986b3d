package cluster_test

import (
	"testing"

	"github.com/100steps/wxappliance/appliance/poll"
	"github.com/100steps/wxappliance/callback"
	"github.com/100steps/wxappliance/kv"
	"github.com/100steps/wxappliance/kv/kvtest"
	"github.com/100steps/wxappliance/rpc/client"
)

// When Redis restarts, the relays' subscriptions come back (go-redis dials
// again, or the relay subscribes again) and messages flow again.
func TestRelaySurvivesRedisRestart(t *testing.T) {
	server := kvtest.StartRedisServer(t, kvtest.RedisServerOptions{})
	store := server.Open(t, kv.RedisOptions{})
	c := newCluster(t, store, store)
	wait := claimWait(200_000_000)
	a, b := c.start("a", wait), c.start("b", wait)
	b.subscribe(client.Filter{}, func(m callback.Message) (any, error) { return textReply("B " + m.Content), nil })
	a.waitCandidates("text", "", b)
	if reply, ok, err := a.deliver(textMsg("1", "before")); err != nil || !ok || reply.Content != "B before" {
		t.Fatalf("before the restart: %+v %v %v", reply, ok, err)
	}
	server.Stop()
	server.Start()
	var reply *callback.Reply
	poll.Until(t, "a message to reach B after the restart", func() bool {
		r, ok, err := a.deliver(textMsg("2", "after"))
		reply = r
		return ok && err == nil
	})
	if reply == nil || reply.Content != "B after" {
		t.Fatalf("after the restart: %+v", reply)
	}
}
