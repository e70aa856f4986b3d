package rpc

import (
	"context"
	"encoding/json"
)

// Deliver exposes deliver to the tests, which run before a callback
// package exists to hand it real messages.
func (s *Server) DeliverForTest(ctx context.Context, msgType, event string, msg any) (json.RawMessage, bool, error) {
	return s.deliver(ctx, msgType, event, msg)
}
