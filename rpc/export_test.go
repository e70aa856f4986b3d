package rpc

import (
	"context"
	"encoding/json"

	"github.com/100steps/wxappliance/media"
)

// DeliverForTest exposes deliver, so the subscriber registry is tested with
// plain values apart from the callback package's types.
func (s *Server) DeliverForTest(ctx context.Context, msgType, event string, msg any) (json.RawMessage, bool, error) {
	return s.deliver(ctx, msgType, event, msg)
}

// MediaBudgetForTest is the server's media budget, so tests can fill it
// and see it given back.
func (s *Server) MediaBudgetForTest() *media.Budget { return s.mediaBudget }
