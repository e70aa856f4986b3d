package rpc

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	"github.com/100steps/wxappliance/callback"
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

// Several instances share the subscribers through package cluster, which
// needs to know what this server's subscribers want without delivering.

// Matches reports whether a local subscriber's filter takes a push of
// msgType (and event). A subscriber may leave right after: Deliver's ok
// has the last word.
func (s *Server) Matches(msgType, event string) bool {
	return s.subs.any(msgType, event)
}

// Subscriptions returns the filters of the local subscribers now, one per
// subscribed connection (normalised as callback.subscribe answered them).
func (s *Server) Subscriptions() []Filter {
	return s.subs.filters()
}

// SubscriptionsChanged returns a channel closed at the next change to the
// local subscribers (one subscribes, subscribes again, or leaves). Take it
// before reading Subscriptions, so no change falls in between.
func (s *Server) SubscriptionsChanged() <-chan struct{} {
	return s.subs.watch()
}
