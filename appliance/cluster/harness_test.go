package cluster_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/100steps/wxappliance/appliance/cluster"
	"github.com/100steps/wxappliance/appliance/logtest"
	"github.com/100steps/wxappliance/appliance/poll"
	"github.com/100steps/wxappliance/appliance/sandbox"
	"github.com/100steps/wxappliance/appliance/sandbox/sandboxtest"
	"github.com/100steps/wxappliance/callback"
	"github.com/100steps/wxappliance/jssdk"
	"github.com/100steps/wxappliance/kv"
	"github.com/100steps/wxappliance/kv/kvtest"
	"github.com/100steps/wxappliance/media"
	"github.com/100steps/wxappliance/oauth"
	"github.com/100steps/wxappliance/rpc"
	"github.com/100steps/wxappliance/rpc/client"
)

const rpcKey = "cluster-test-key-0123456789"

// waitLimit bounds every wait for something that normally happens at once.
const waitLimit = 30 * time.Second

// forEachBackend runs test once per backend.
func forEachBackend(t *testing.T, test func(t *testing.T, store kv.Store, bus kv.Bus)) {
	for _, b := range kvtest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			store, bus := b.Open(t)()
			test(t, store, bus)
		})
	}
}

// testCluster is several instances in one process over one store and bus,
// each with its own RPC server behind its own HTTP server, Registry and
// Relay.
type testCluster struct {
	t     testing.TB
	store kv.Store
	bus   kv.Bus
	svc   rpc.Services
	logs  *logtest.Buffer
}

func newCluster(t testing.TB, store kv.Store, bus kv.Bus) *testCluster {
	t.Helper()
	wx := sandboxtest.New(t, sandboxtest.Options{Timeout: 5 * time.Second})
	app := wx.App(store)
	web := oauth.NewWeb(wx.Client, wx.Sandbox.AppID(), sandbox.DefaultAppSecret, wx.URL, nil)
	return &testCluster{
		t:     t,
		store: store,
		bus:   bus,
		logs:  &logtest.Buffer{},
		svc: rpc.Services{
			Sessions: oauth.NewSessions(store, web, oauth.SessionConfig{TTL: time.Hour}),
			App:      app,
			JSSDK:    jssdk.New(app, store, jssdk.Options{AllowedHost: func(string) bool { return false }}),
			Media:    media.New(app, media.Options{MaxBytes: 1 << 20, Timeout: 5 * time.Second}),
		},
	}
}

type instance struct {
	t     testing.TB
	id    string
	srv   *rpc.Server
	url   string
	reg   *cluster.Registry
	relay *cluster.Relay
	bus   kv.Bus
	stop  func() // stops the relay, as a clean shutdown does
}

type instanceOption struct {
	relay func(*cluster.RelayConfig)
	bus   func(kv.Bus) kv.Bus // wraps the shared bus for this instance
}

// start runs an instance named name; its id is name plus a suffix, as
// NewID makes them.
func (c *testCluster) start(name string, opts ...instanceOption) *instance {
	t := c.t
	t.Helper()
	log := slog.New(slog.NewTextHandler(c.logs, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test_instance", name)
	srv, err := rpc.New(c.svc, rpc.Options{Keys: []rpc.Key{{Name: "backend", Key: rpcKey}}, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	t.Cleanup(func() { srv.Close() })

	suffix := cluster.NewID()
	suffix = suffix[strings.LastIndex(suffix, "-")+1:]
	in := &instance{t: t, id: name + "-" + suffix, srv: srv, url: "ws" + strings.TrimPrefix(hs.URL, "http"), bus: c.bus}
	cfg := cluster.RelayConfig{ID: in.id, Store: c.store, Local: srv, Logger: log}
	for _, o := range opts {
		if o.bus != nil {
			in.bus = o.bus(in.bus)
		}
		if o.relay != nil {
			o.relay(&cfg)
		}
	}
	cfg.Bus = in.bus
	if in.reg, err = cluster.NewRegistry(c.store, in.id, cluster.RegistryConfig{Logger: log}); err != nil {
		t.Fatal(err)
	}
	if in.relay, err = cluster.NewRelay(cfg); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { in.reg.Run(ctx) })
	wg.Go(func() { in.relay.Run(ctx) })
	in.stop = sync.OnceFunc(func() {
		cancel()
		wg.Wait()
	})
	t.Cleanup(in.stop)
	return in
}

// subscribe connects a backend to the instance that answers the pushes
// matching f with answer; it closes with the test.
func (in *instance) subscribe(f client.Filter, answer func(m callback.Message) (any, error)) *client.Client {
	in.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	c, err := client.Dial(ctx, in.url, rpcKey, nil)
	if err != nil {
		in.t.Fatal(err)
	}
	in.t.Cleanup(func() { c.Close() })
	err = c.Subscribe(ctx, f, func(ctx context.Context, raw json.RawMessage) (any, error) {
		var m callback.Message
		if err := json.Unmarshal(raw, &m); err != nil {
			return nil, err
		}
		return answer(m)
	})
	if err != nil {
		in.t.Fatal(err)
	}
	return c
}

// deliver is the callback handing msg to the instance's relay, with a
// deadline generous enough for a busy machine.
func (in *instance) deliver(msg *callback.Message) (*callback.Reply, bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	reply, ok, err := in.relay.Deliver(ctx, msg)
	if ctx.Err() != nil {
		in.t.Errorf("Deliver of %s ran into its deadline (ok %v, err %v)", msg.MsgID, ok, err)
	}
	return reply, ok, err
}

// waitCandidates waits until the instance would try exactly want (ids,
// any order) for a message of msgType and event.
func (in *instance) waitCandidates(msgType, event string, want ...*instance) {
	in.t.Helper()
	ids := make([]string, len(want))
	for i, w := range want {
		ids[i] = w.id
	}
	in.waitCandidateIDs(msgType, event, ids...)
}

func (in *instance) waitCandidateIDs(msgType, event string, want ...string) {
	in.t.Helper()
	slices.Sort(want)
	var got []string
	poll.Until(in.t, "candidates "+strings.Join(want, ",")+" for "+msgType+"/"+event, func() bool {
		var err error
		got, err = in.relay.Candidates(context.Background(), msgType, event)
		return err == nil && slices.Equal(got, want)
	})
}

func textMsg(id, content string) *callback.Message {
	return &callback.Message{ToUserName: "gh_test", FromUserName: "oSBX_zhangsan", CreateTime: 1700000000, MsgType: callback.TypeText,
		MsgID: id, Content: content, Raw: map[string]any{"MsgType": "text", "Content": content, "MsgId": id}}
}

func eventMsg(event string) *callback.Message {
	return &callback.Message{ToUserName: "gh_test", FromUserName: "oSBX_lisi", CreateTime: 1700000000, MsgType: callback.TypeEvent,
		Event: event, Raw: map[string]any{"MsgType": "event", "Event": event}}
}

func textReply(content string) *callback.Reply {
	return &callback.Reply{Type: callback.ReplyText, Content: content}
}

// cutBus is a bus whose subscriptions on matching channels a test can end,
// as a Redis restart does, or starve, as a lost notice does.
type cutBus struct {
	kv.Bus
	match func(channel string) bool

	mu      sync.Mutex
	cancels []context.CancelFunc
	subs    int           // subscriptions made on matching channels
	starve  bool          // matching channels deliver nothing
	hold    chan struct{} // if set, matching channels deliver once it is closed
}

func (b *cutBus) Subscribe(ctx context.Context, channel string) (<-chan []byte, error) {
	if !b.match(channel) {
		return b.Bus.Subscribe(ctx, channel)
	}
	ctx, cancel := context.WithCancel(ctx)
	ch, err := b.Bus.Subscribe(ctx, channel)
	if err != nil {
		cancel()
		return nil, err
	}
	b.mu.Lock()
	b.cancels = append(b.cancels, cancel)
	b.subs++
	starve := b.starve
	b.mu.Unlock()
	switch {
	case starve:
		out := make(chan []byte)
		go func() {
			defer close(out)
			for range ch {
			}
		}()
		return out, nil
	case b.hold != nil:
		out := make(chan []byte, 16)
		go func() {
			defer close(out)
			for m := range ch {
				select {
				case <-b.hold:
					out <- m
				case <-ctx.Done():
					return
				}
			}
		}()
		return out, nil
	}
	return ch, nil
}

// cut ends every subscription on matching channels.
func (b *cutBus) cut() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.cancels {
		c()
	}
	b.cancels = nil
}

func (b *cutBus) subscriptions() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.subs
}
