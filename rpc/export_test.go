package rpc

import (
	"context"
	"encoding/json"
)

// DeliverForTest exposes deliver, so the subscriber registry is tested with
// plain values apart from the callback package's types.
func (s *Server) DeliverForTest(ctx context.Context, msgType, event string, msg any) (json.RawMessage, bool, error) {
	return s.deliver(ctx, msgType, event, msg)
}
