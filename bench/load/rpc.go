package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/100steps/wxappliance/rpc/client"
)

// rpcKey is the key the load run configures for its backend.
const rpcKey = "load-backend-key-0123456789"

// rpcScenario calls session.openid over one WebSocket per instance, shared
// by every worker, as a backend keeps one connection and calls on it
// concurrently; with several instances the calls go to each in turn.
func rpcScenario(bases []string, session string) (scenario, func(), error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var clients []*client.Client
	closeAll := func() {
		for _, c := range clients {
			c.Close()
		}
	}
	for _, base := range bases {
		url := "ws" + strings.TrimPrefix(base, "http") + "/rpc"
		c, err := client.Dial(ctx, url, rpcKey, nil)
		if err != nil {
			closeAll()
			return scenario{}, nil, fmt.Errorf("rpc dial: %w", err)
		}
		clients = append(clients, c)
	}
	var n atomic.Uint64
	params := map[string]string{"session": session}
	name := "RPC session.openid (one WebSocket)"
	if len(bases) > 1 {
		name = "RPC session.openid (one WebSocket per instance)"
	}
	return scenario{
		name: name,
		call: func(int) error {
			c := clients[(n.Add(1)-1)%uint64(len(clients))]
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var out struct {
				OpenID string `json:"openid"`
			}
			if err := c.Call(ctx, "session.openid", params, &out); err != nil {
				return err
			}
			if out.OpenID == "" {
				return errors.New("session.openid without openid")
			}
			return nil
		},
	}, closeAll, nil
}
