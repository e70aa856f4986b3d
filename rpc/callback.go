package rpc

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	"wxappliance/callback"
)

// The Server is the callback's subscriber: the appliance sets it on the
// dispatcher, and pushes go to the backends that called
// callback.subscribe before the rules see them.
var _ callback.Subscriber = (*Server)(nil)

// Deliver implements callback.Subscriber: msg goes, as its JSON form, to a
// matching subscriber (round-robin) in a callback.message request, and its
// {"reply": ...} comes back as the passive reply. ok is false when no
// subscriber matches, so the rules answer. ctx is the callback's reply
// deadline; an answer after it is dropped and logged.
func (s *Server) Deliver(ctx context.Context, msg *callback.Message) (*callback.Reply, bool, error) {
	raw, ok, err := s.deliver(ctx, msg.MsgType, msg.Event, msg)
	if err != nil || !ok || raw == nil {
		return nil, ok, err
	}
	// Strict, so that a misspelt member ("contents") is an error the
	// backend's logs can show rather than a reply with a field missing.
	var reply callback.Reply
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&reply); err != nil {
		return nil, true, fmt.Errorf("%w: %v", callback.ErrBadReply, err)
	}
	return &reply, true, nil
}
