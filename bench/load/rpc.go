package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/100steps/wxappliance/rpc/client"
)

// rpcKey is the key the load run configures for its backend.
const rpcKey = "load-backend-key-0123456789"

// rpcScenario calls session.openid over one WebSocket shared by every
// worker, as a backend keeps one connection and calls on it concurrently.
func rpcScenario(base, session string) (scenario, func(), error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	url := "ws" + strings.TrimPrefix(base, "http") + "/rpc"
	c, err := client.Dial(ctx, url, rpcKey, nil)
	if err != nil {
		return scenario{}, nil, fmt.Errorf("rpc dial: %w", err)
	}
	params := map[string]string{"session": session}
	return scenario{
		name: "RPC session.openid (one WebSocket)",
		call: func(int) error {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var out struct {
				OpenID string `json:"openid"`
			}
			if err := c.Call(ctx, "session.openid", params, &out); err != nil {
				return err
			}
			if out.OpenID == "" {
				return fmt.Errorf("session.openid without openid")
			}
			return nil
		},
	}, func() { c.Close() }, nil
}
