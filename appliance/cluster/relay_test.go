package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/100steps/wxappliance/appliance/cluster"
	"github.com/100steps/wxappliance/appliance/poll"
	"github.com/100steps/wxappliance/callback"
	"github.com/100steps/wxappliance/kv"
	"github.com/100steps/wxappliance/rpc"
	"github.com/100steps/wxappliance/rpc/client"
)

func claimWait(d time.Duration) instanceOption {
	return instanceOption{relay: func(c *cluster.RelayConfig) { c.ClaimWait = d }}
}

// A push landing on A reaches the backend subscribed on B, whole, and B's
// backend's answer is A's reply; errors and invalid replies come back as
// errors, as they would from a local subscriber.
func TestRelayForwardsToAnotherInstance(t *testing.T) {
	forEachBackend(t, func(t *testing.T, store kv.Store, bus kv.Bus) {
		c := newCluster(t, store, bus)
		a, b := c.start("a"), c.start("b")
		seen := make(chan callback.Message, 10)
		b.subscribe(client.Filter{MsgTypes: []string{"text"}}, func(m callback.Message) (any, error) {
			seen <- m
			switch m.Content {
			case "none":
				return nil, nil
			case "fail":
				return nil, errors.New("backend failed")
			case "typo":
				return map[string]string{"type": "text", "contnet": "x"}, nil
			}
			return textReply("B收到：" + m.Content), nil
		})
		a.waitCandidates("text", "", b)

		reply, ok, err := a.deliver(textMsg("1001", "你好 & <b>"))
		if err != nil || !ok || reply == nil || reply.Content != "B收到：你好 & <b>" {
			t.Fatalf("A's reply: %+v %v %v", reply, ok, err)
		}
		m := <-seen
		if m.MsgID != "1001" || m.FromUserName != "oSBX_zhangsan" || m.ToUserName != "gh_test" || m.CreateTime != 1700000000 ||
			m.Raw["Content"] != "你好 & <b>" || m.Raw["MsgId"] != "1001" {
			t.Fatalf("B's backend saw %+v", m)
		}

		if reply, ok, err := a.deliver(textMsg("1002", "none")); reply != nil || !ok || err != nil {
			t.Fatalf("no passive reply: %+v %v %v", reply, ok, err)
		}
		if _, ok, err := a.deliver(textMsg("1003", "fail")); !ok || err == nil || !strings.Contains(err.Error(), b.id) {
			t.Fatalf("backend error: %v %v, want ok and an error naming %s", ok, err, b.id)
		}
		if _, ok, err := a.deliver(textMsg("1004", "typo")); !ok || !errors.Is(err, callback.ErrBadReply) {
			t.Fatalf("misspelt reply: %v %v, want ErrBadReply", ok, err)
		}
		// B's own pushes go to its backend without the bus.
		if reply, ok, err := b.deliver(textMsg("1005", "local")); err != nil || !ok || reply.Content != "B收到：local" {
			t.Fatalf("B's reply: %+v %v %v", reply, ok, err)
		}
		if s := a.relay.Stats(); s.Remote != 4 || s.Local != 0 {
			t.Fatalf("A's stats %+v, want 4 remote deliveries", s)
		}
		if s := b.relay.Stats(); s.Served != 4 || s.Local != 1 {
			t.Fatalf("B's stats %+v, want 4 served for A and 1 local", s)
		}
	})
}

// Each of many messages, pushed concurrently to three instances, reaches
// exactly one of the two backends (on A and B), and its answer comes back.
func TestRelayEachMessageOnce(t *testing.T) {
	forEachBackend(t, func(t *testing.T, store kv.Store, bus kv.Bus) {
		c := newCluster(t, store, bus)
		// A generous ClaimWait: a busy machine must not make the origin
		// withdraw and send the rules a message a backend was about to take.
		wait := claimWait(10 * time.Second)
		a, b, o := c.start("a", wait), c.start("b", wait), c.start("o", wait)
		var mu sync.Mutex
		got := map[string][]string{} // msg id -> backends that received it
		for _, in := range []*instance{a, b} {
			name := in.id
			in.subscribe(client.Filter{}, func(m callback.Message) (any, error) {
				mu.Lock()
				got[m.MsgID] = append(got[m.MsgID], name)
				mu.Unlock()
				return textReply(name), nil
			})
		}
		for _, in := range []*instance{a, b, o} {
			in.waitCandidates("text", "", except([]*instance{a, b}, in)...)
		}

		const messages = 150
		replies := make([]string, messages)
		var wg sync.WaitGroup
		ids := make(chan int)
		for range 6 {
			wg.Go(func() {
				for i := range ids {
					via := []*instance{a, b, o}[i%3]
					reply, ok, err := via.deliver(textMsg(fmt.Sprint(5000+i), "hi"))
					if err != nil || !ok || reply == nil {
						t.Errorf("message %d via %s: %+v %v %v", i, via.id, reply, ok, err)
						continue
					}
					replies[i] = reply.Content
				}
			})
		}
		for i := range messages {
			ids <- i
		}
		close(ids)
		wg.Wait()

		fromO := map[string]int{}
		for i := range messages {
			id := fmt.Sprint(5000 + i)
			if len(got[id]) != 1 {
				t.Fatalf("message %s reached %v, want exactly one backend", id, got[id])
			}
			if got[id][0] != replies[i] {
				t.Fatalf("message %s reached %s but the reply came from %q", id, got[id][0], replies[i])
			}
			if i%3 == 2 {
				fromO[replies[i]]++
			}
		}
		if fromO[a.id] == 0 || fromO[b.id] == 0 {
			t.Fatalf("O's messages went %v, want both instances to take turns", fromO)
		}
		if len(got) != messages {
			t.Fatalf("%d messages delivered, want %d", len(got), messages)
		}
	})
}

func except(all []*instance, skip *instance) []*instance {
	var out []*instance
	for _, in := range all {
		if in != skip {
			out = append(out, in)
		}
	}
	return out
}

// With no subscriber anywhere, or none whose filter matches, the rules
// answer at once: nothing is sent to another instance to wait for.
func TestRelayNobodySubscribed(t *testing.T) {
	forEachBackend(t, func(t *testing.T, store kv.Store, bus kv.Bus) {
		c := newCluster(t, store, bus)
		// Any attempt would make Deliver wait for the claim for most of its
		// deadline, which deliver reports.
		wait := claimWait(time.Hour)
		a, b := c.start("a", wait), c.start("b", wait)
		if reply, ok, err := a.deliver(textMsg("1", "hi")); reply != nil || ok || err != nil {
			t.Fatalf("nobody subscribed: %+v %v %v, want the rules to answer", reply, ok, err)
		}
		b.subscribe(client.Filter{MsgTypes: []string{"text"}, Events: []string{"CLICK"}}, func(callback.Message) (any, error) {
			t.Error("B's backend received a message its filter refuses")
			return nil, nil
		})
		a.waitCandidates("text", "", b)
		for _, m := range []*callback.Message{eventMsg("VIEW"), {MsgType: "image", Raw: map[string]any{}}, eventMsg("subscribe")} {
			if reply, ok, err := a.deliver(m); reply != nil || ok || err != nil {
				t.Fatalf("%s/%s: %+v %v %v, want the rules to answer", m.MsgType, m.Event, reply, ok, err)
			}
		}
		if s := a.relay.Stats(); s.Forwarded != 0 {
			t.Fatalf("A forwarded %d messages nobody subscribed to", s.Forwarded)
		}
	})
}

// Every instance's filters are respected: each message goes to the
// instance whose backend asked for it, whatever the case of its names.
func TestRelayFiltersAcrossInstances(t *testing.T) {
	forEachBackend(t, func(t *testing.T, store kv.Store, bus kv.Bus) {
		c := newCluster(t, store, bus)
		a, b, o := c.start("a"), c.start("b"), c.start("o")
		b.subscribe(client.Filter{Events: []string{"click", "SUBSCRIBE"}}, func(m callback.Message) (any, error) {
			return textReply("B " + m.Event), nil
		})
		o.subscribe(client.Filter{MsgTypes: []string{"text", "IMAGE"}}, func(m callback.Message) (any, error) {
			return textReply("O " + m.MsgType), nil
		})
		a.waitCandidates("event", "CLICK", b)
		a.waitCandidates("text", "", o)
		for _, tt := range []struct {
			msg  *callback.Message
			want string // "" for the rules
		}{
			{textMsg("1", "hi"), "O text"},
			{&callback.Message{MsgType: "image", MsgID: "2", Raw: map[string]any{}}, "O image"},
			{eventMsg("CLICK"), "B CLICK"},
			{eventMsg("subscribe"), "B subscribe"},
			{eventMsg("VIEW"), ""},
			{&callback.Message{MsgType: "voice", MsgID: "3", Raw: map[string]any{}}, ""},
		} {
			reply, ok, err := a.deliver(tt.msg)
			if err != nil || ok != (tt.want != "") || tt.want != "" && (reply == nil || reply.Content != tt.want) {
				t.Fatalf("%s/%s: %+v %v %v, want %q", tt.msg.MsgType, tt.msg.Event, reply, ok, err, tt.want)
			}
		}
	})
}

// An instance that crashed leaves its advertisement behind until it
// expires. The origin sends it the message, withdraws the attempt when
// nobody takes it, and moves on to the next instance, or to the rules,
// well within the deadline; the dead instance's backend never gets it.
func TestRelayDeadTarget(t *testing.T) {
	forEachBackend(t, func(t *testing.T, store kv.Store, bus kv.Bus) {
		c := newCluster(t, store, bus)
		wait := claimWait(200 * time.Millisecond)
		a, b, o := c.start("a", wait), c.start("b", wait), c.start("o", wait)
		var bGot, oGot atomic.Int32
		b.subscribe(client.Filter{}, func(callback.Message) (any, error) {
			bGot.Add(1)
			return textReply("B"), nil
		})
		oBackend := o.subscribe(client.Filter{}, func(callback.Message) (any, error) {
			oGot.Add(1)
			return textReply("O"), nil
		})
		a.waitCandidates("text", "", b, o)

		// B dies: its relay stops, its backend stays connected to it, and
		// its advertisement is put back as a crash would leave it.
		b.stop()
		if err := cluster.Advertise(context.Background(), store, b.id, rpc.Filter{}, time.Minute); err != nil {
			t.Fatal(err)
		}
		a.waitCandidates("text", "", b, o)

		for i := range 4 {
			reply, ok, err := a.deliver(textMsg(fmt.Sprint(i), "hi"))
			if err != nil || !ok || reply == nil || reply.Content != "O" {
				t.Fatalf("message %d: %+v %v %v, want O's reply", i, reply, ok, err)
			}
		}
		if bGot.Load() != 0 || oGot.Load() != 4 {
			t.Fatalf("B's backend got %d, O's %d; want 0 and 4", bGot.Load(), oGot.Load())
		}
		if s := a.relay.Stats(); s.Withdrawn < 1 {
			t.Fatalf("A's stats %+v: the dead instance was never tried", s)
		}

		// With only the dead instance left, the rules answer.
		oBackend.Close()
		a.waitCandidates("text", "", b)
		if reply, ok, err := a.deliver(textMsg("9", "hi")); reply != nil || ok || err != nil {
			t.Fatalf("only a dead instance: %+v %v %v, want the rules to answer", reply, ok, err)
		}
		if bGot.Load() != 0 {
			t.Fatal("a dead instance's backend received a message")
		}
	})
}

// An instance that took a message and has not answered keeps it: the
// origin never sends it elsewhere, gives up at its deadline with an error
// (so "success" goes out), and drops the answer that comes after.
func TestRelaySlowTargetKeepsTheMessage(t *testing.T) {
	forEachBackend(t, func(t *testing.T, store kv.Store, bus kv.Bus) {
		c := newCluster(t, store, bus)
		// A short ClaimWait makes the origin look at the attempt often,
		// which is where a bug would resend it.
		wait := claimWait(20 * time.Millisecond)
		a, b, o := c.start("a", wait), c.start("b", wait), c.start("o", wait)
		release := make(chan struct{})
		var received atomic.Int32
		took := make(chan string, 2)
		for _, in := range []*instance{b, o} {
			in.subscribe(client.Filter{}, func(callback.Message) (any, error) {
				received.Add(1)
				took <- in.id
				<-release
				return textReply("late"), nil
			})
		}
		a.waitCandidates("text", "", b, o)

		ctx, cancel := context.WithCancel(context.Background())
		type result struct {
			reply *callback.Reply
			ok    bool
			err   error
		}
		done := make(chan result, 1)
		go func() {
			reply, ok, err := a.relay.Deliver(ctx, textMsg("77", "hi"))
			done <- result{reply, ok, err}
		}()
		var holder string
		select {
		case holder = <-took:
		case <-time.After(waitLimit):
			t.Fatal("no backend received the message")
		}
		checked := a.relay.Stats().Checked
		poll.Until(t, "A to look at the attempt a few times", func() bool {
			return a.relay.Stats().Checked >= checked+5 || len(done) > 0
		})
		cancel() // the callback's deadline
		r := <-done
		if n := received.Load(); n != 1 {
			t.Fatalf("%d backends received the message, want 1", n)
		}
		if r.reply != nil || !r.ok || !errors.Is(r.err, context.Canceled) || !strings.Contains(r.err.Error(), holder) {
			t.Fatalf("Deliver at its deadline: %+v %v %v, want ok and the deadline's error naming %s", r.reply, r.ok, r.err, holder)
		}
		close(release)
		poll.Until(t, "A to drop the late answer", func() bool { return a.relay.Stats().Dropped == 1 })
		if s := a.relay.Stats(); s.Unsettled != 1 || s.Remote != 0 {
			t.Fatalf("A's stats %+v", s)
		}
	})
}

// An attempt that reaches its target after the origin withdrew it (a slow
// bus) is not delivered: the withdrawal took the attempt's key first.
func TestRelayLateAttemptNotDelivered(t *testing.T) {
	forEachBackend(t, func(t *testing.T, store kv.Store, bus kv.Bus) {
		c := newCluster(t, store, bus)
		slow := &cutBus{hold: make(chan struct{}), match: func(ch string) bool { return strings.HasPrefix(ch, cluster.RequestChannel) }}
		a := c.start("a", claimWait(50*time.Millisecond))
		b := c.start("b", instanceOption{bus: func(b kv.Bus) kv.Bus { slow.Bus = b; return slow }})
		var got atomic.Int32
		b.subscribe(client.Filter{}, func(callback.Message) (any, error) {
			got.Add(1)
			return textReply("B"), nil
		})
		a.waitCandidates("text", "", b)
		if reply, ok, err := a.deliver(textMsg("1", "hi")); reply != nil || ok || err != nil {
			t.Fatalf("%+v %v %v, want the rules to answer once the attempt is withdrawn", reply, ok, err)
		}
		close(slow.hold)
		poll.Until(t, "B to handle the late attempt", func() bool { s := b.relay.Stats(); return s.Refused+s.Served > 0 })
		if got.Load() != 0 || b.relay.Stats().Served != 0 {
			t.Fatalf("B's backend received a withdrawn attempt (stats %+v)", b.relay.Stats())
		}
		if s := a.relay.Stats(); s.Withdrawn != 1 {
			t.Fatalf("A's stats %+v, want one attempt withdrawn", s)
		}
	})
}

// An answer whose notice is lost is found in the store.
func TestRelayAnswerFromStore(t *testing.T) {
	forEachBackend(t, func(t *testing.T, store kv.Store, bus kv.Bus) {
		c := newCluster(t, store, bus)
		deaf := instanceOption{bus: func(b kv.Bus) kv.Bus {
			return &cutBus{Bus: b, starve: true, match: func(ch string) bool { return strings.HasPrefix(ch, cluster.AnswerChannel) }}
		}}
		a, b := c.start("a", deaf, claimWait(100*time.Millisecond)), c.start("b")
		b.subscribe(client.Filter{}, func(m callback.Message) (any, error) { return textReply("B " + m.Content), nil })
		a.waitCandidates("text", "", b)
		reply, ok, err := a.deliver(textMsg("1", "hi"))
		if err != nil || !ok || reply == nil || reply.Content != "B hi" {
			t.Fatalf("reply %+v %v %v", reply, ok, err)
		}
		if s := a.relay.Stats(); s.Polled != 1 {
			t.Fatalf("A's stats %+v, want the answer read from the store", s)
		}
	})
}

// When the bus drops the relay's subscriptions (Redis restarted), the
// relay subscribes again and messages flow again.
func TestRelaySubscribesAgain(t *testing.T) {
	forEachBackend(t, func(t *testing.T, store kv.Store, bus kv.Bus) {
		c := newCluster(t, store, bus)
		var bBus *cutBus
		flaky := instanceOption{bus: func(b kv.Bus) kv.Bus {
			bBus = &cutBus{Bus: b, match: func(string) bool { return true }}
			return bBus
		}}
		wait := claimWait(200 * time.Millisecond)
		a, b := c.start("a", wait), c.start("b", flaky, wait)
		b.subscribe(client.Filter{}, func(m callback.Message) (any, error) { return textReply("B " + m.Content), nil })
		a.waitCandidates("text", "", b)
		poll.Until(t, "B's three subscriptions", func() bool { return bBus.subscriptions() == 3 })

		bBus.cut()
		poll.Until(t, "B to subscribe again", func() bool { return bBus.subscriptions() == 6 })
		var reply *callback.Reply
		poll.Until(t, "a message to reach B again", func() bool {
			r, ok, err := a.deliver(textMsg("1", "again"))
			reply = r
			return ok && err == nil
		})
		if reply == nil || reply.Content != "B again" {
			t.Fatalf("reply %+v", reply)
		}
	})
}

// An instance whose subscriber left declines without claiming, and the
// origin moves on (here to the rules) at once.
func TestRelayStaleAdvertisementDeclined(t *testing.T) {
	forEachBackend(t, func(t *testing.T, store kv.Store, bus kv.Bus) {
		c := newCluster(t, store, bus)
		wait := claimWait(time.Hour)
		a, b := c.start("a", wait), c.start("b", wait)
		backend := b.subscribe(client.Filter{}, func(callback.Message) (any, error) {
			t.Error("a backend that left received a message")
			return nil, nil
		})
		a.waitCandidates("text", "", b)
		backend.Close()
		a.waitCandidates("text", "")
		// A stale entry, as an origin's cache would still hold it.
		if err := cluster.Advertise(context.Background(), store, b.id, rpc.Filter{}, time.Minute); err != nil {
			t.Fatal(err)
		}
		a.waitCandidates("text", "", b)
		if reply, ok, err := a.deliver(textMsg("1", "hi")); reply != nil || ok || err != nil {
			t.Fatalf("%+v %v %v, want the rules to answer", reply, ok, err)
		}
		if s := a.relay.Stats(); s.Declined != 1 || s.Withdrawn != 0 {
			t.Fatalf("A's stats %+v, want one attempt declined", s)
		}
	})
}

// A dead instance's advertisement stops counting when it expires, and the
// next writer prunes it; a clean stop withdraws at once.
func TestAdvertisementExpires(t *testing.T) {
	forEachBackend(t, func(t *testing.T, store kv.Store, bus kv.Bus) {
		ctx := context.Background()
		c := newCluster(t, store, bus)
		a, b := c.start("a"), c.start("b")
		if err := cluster.Advertise(ctx, store, "ghost-1", rpc.Filter{}, time.Second); err != nil {
			t.Fatal(err)
		}
		a.waitCandidateIDs("text", "", "ghost-1")
		a.waitCandidateIDs("text", "")

		b.subscribe(client.Filter{}, func(callback.Message) (any, error) { return nil, nil })
		a.waitCandidates("text", "", b)
		if ids, err := cluster.Advertised(ctx, store); err != nil || len(ids) != 1 || ids[0] != b.id {
			t.Fatalf("advertised %v %v, want only %s: the ghost pruned", ids, err, b.id)
		}

		b.stop()
		if ids, err := cluster.Advertised(ctx, store); err != nil || len(ids) != 0 {
			t.Fatalf("advertised %v %v after B stopped, want nothing", ids, err)
		}
		a.waitCandidates("text", "")
	})
}
