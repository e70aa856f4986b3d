package appliance

import (
	"context"

	"github.com/100steps/wxappliance/appliance/cluster"
	"github.com/100steps/wxappliance/callback"
	"github.com/100steps/wxappliance/rpc"
)

// buildRPC creates the JSON-RPC server for backends when rpc.keys has a key;
// without one RPC is off and rpc.path answers 404.
func (a *Appliance) buildRPC() error {
	if len(a.cfg.RPC.Keys) == 0 {
		return nil
	}
	keys := make([]rpc.Key, len(a.cfg.RPC.Keys))
	for i, k := range a.cfg.RPC.Keys {
		keys[i] = rpc.Key{Name: k.Name, Key: k.Key}
	}
	srv, err := rpc.New(rpc.Services{
		Sessions: a.sessions,
		App:      a.app,
		JSSDK:    a.jssdk,
		Media:    a.media,
	}, rpc.Options{
		Keys:           keys,
		AllowedOrigins: a.cfg.CORS.AllowedOrigins,
		// The same deadlines as the browser routes.
		CallTimeout:  a.cfg.WeChat.Timeout.D(),
		MediaTimeout: a.cfg.Media.Timeout.D(),
		ReadLimit:    int64(a.cfg.Server.MaxBodyBytes),
		MediaBudget:  int64(a.cfg.RPC.MediaBudget),
		Logger:       a.log.With("component", "rpc"),
		ObserveConn:  a.ops.metrics.RPCConn,
		ObserveCall:  a.ops.rpcCall,
	})
	if err != nil {
		return err
	}
	a.rpc = srv
	var sub callback.Subscriber = srv
	if a.cfg.Storage.Shared() {
		// Backends subscribed to any instance answer the pushes that land
		// on any instance. The relay serves the other instances' pushes
		// even when this one's callback is off.
		a.relay, err = cluster.NewRelay(cluster.RelayConfig{ID: a.instance, Store: a.store, Bus: a.bus, Local: srv,
			Logger: a.log.With("component", "cluster", "instance", a.instance)})
		if err != nil {
			return err
		}
		sub = a.relay
	}
	if a.callback != nil {
		// Backends that subscribe answer the pushes before the rules.
		a.callback.SetSubscriber(sub)
	}
	return nil
}

// RPC is the JSON-RPC server, nil when RPC is off.
func (a *Appliance) RPC() *rpc.Server { return a.rpc }

// drainRPC ends the RPC connections, which http.Server.Shutdown does not
// see (they are hijacked): requests in flight get until
// server.shutdown_timeout, then every connection is closed with 1001. It
// runs as the http.Server's shutdown hook and again in Close, which so
// waits for the drain before the store is closed under the methods.
func (a *Appliance) drainRPC() {
	if a.rpc == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), a.cfg.Server.ShutdownTimeout.D())
	defer cancel()
	if err := a.rpc.Shutdown(ctx); err != nil {
		a.log.Warn("rpc shutdown", "err", err)
	}
}
