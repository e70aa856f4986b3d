package rpc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/sourcegraph/jsonrpc2"
)

// Filter chooses the callback pushes a subscriber receives. Empty (both
// lists empty) means everything. Otherwise a message matches when its
// msg_type is in MsgTypes, or when it is an event whose name is in Events;
// "event" in MsgTypes takes every event. Names compare case-insensitively
// (WeChat spells subscribe in lower case and CLICK in upper case).
type Filter struct {
	MsgTypes []string `json:"msg_types"`
	Events   []string `json:"events"`
}

// Limits on a filter, so a subscription stays a small thing to match.
const (
	maxFilterNames = 32
	maxFilterName  = 64
)

func (f Filter) validate() error {
	for field, names := range map[string][]string{"msg_types": f.MsgTypes, "events": f.Events} {
		if len(names) > maxFilterNames {
			return invalidParams(fmt.Sprintf("%s最多%d项", field, maxFilterNames), nil)
		}
		for _, n := range names {
			if n == "" || len(n) > maxFilterName {
				return invalidParams(fmt.Sprintf("%s中的名称不能为空或超过%d字节", field, maxFilterName), nil)
			}
		}
	}
	return nil
}

// Matches reports whether a push of msgType (and, for an event, its name)
// passes f. It is the one matching rule: the local registry and the
// cluster relay, which advertises filters to other instances, both use it.
func (f Filter) Matches(msgType, event string) bool {
	if len(f.MsgTypes) == 0 && len(f.Events) == 0 {
		return true
	}
	if slices.ContainsFunc(f.MsgTypes, equalFold(msgType)) {
		return true
	}
	return strings.EqualFold(msgType, "event") && slices.ContainsFunc(f.Events, equalFold(event))
}

func equalFold(s string) func(string) bool {
	return func(name string) bool { return strings.EqualFold(name, s) }
}

// subscription is one connection's filter.
type subscription struct {
	c      *conn
	filter Filter
}

func newSubscription(c *conn, f Filter) *subscription {
	return &subscription{c: c, filter: f}
}

func (s *subscription) matches(msgType, event string) bool {
	return s.filter.Matches(msgType, event)
}

// subscribers is the registry of subscribed connections, in the order they
// subscribed.
type subscribers struct {
	mu      sync.Mutex
	list    []*subscription
	next    uint64        // round-robin position
	changed chan struct{} // closed at the next change; nil until watched
}

// set adds c's subscription, or replaces it in place.
func (r *subscribers) set(sub *subscription) {
	r.mu.Lock()
	defer r.mu.Unlock()
	defer r.changedLocked()
	for i, s := range r.list {
		if s.c == sub.c {
			r.list[i] = sub
			return
		}
	}
	r.list = append(r.list, sub)
}

func (r *subscribers) remove(c *conn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, s := range r.list {
		if s.c == c {
			r.list = append(r.list[:i:i], r.list[i+1:]...)
			r.changedLocked()
			return
		}
	}
}

func (r *subscribers) changedLocked() {
	if r.changed != nil {
		close(r.changed)
		r.changed = nil
	}
}

// watch returns a channel closed at the next change.
func (r *subscribers) watch() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.changed == nil {
		r.changed = make(chan struct{})
	}
	return r.changed
}

func (r *subscribers) filters() []Filter {
	r.mu.Lock()
	defer r.mu.Unlock()
	fs := make([]Filter, len(r.list))
	for i, s := range r.list {
		fs[i] = Filter{MsgTypes: slices.Clone(s.filter.MsgTypes), Events: slices.Clone(s.filter.Events)}
	}
	return fs
}

func (r *subscribers) any(msgType, event string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.ContainsFunc(r.list, func(s *subscription) bool { return s.matches(msgType, event) })
}

// pick returns the subscriptions matching a message, the one whose turn it
// is first and the others after it as fallbacks.
func (r *subscribers) pick(msgType, event string) []*subscription {
	r.mu.Lock()
	defer r.mu.Unlock()
	var match []*subscription
	for _, s := range r.list {
		if s.matches(msgType, event) {
			match = append(match, s)
		}
	}
	if len(match) < 2 {
		return match
	}
	first := int(r.next % uint64(len(match)))
	r.next++
	return append(match[first:], match[:first]...)
}

// callbackSubscribe: {msg_types?, events?} -> the filter now in force. The
// connection receives callback.message requests for matching pushes until
// it disconnects; subscribing again replaces the filter.
func (s *Server) callbackSubscribe(_ context.Context, c *conn, raw json.RawMessage) (any, error) {
	var f Filter
	if err := decodeParams(raw, &f); err != nil {
		return nil, err
	}
	if err := f.validate(); err != nil {
		return nil, err
	}
	if f.MsgTypes == nil {
		f.MsgTypes = []string{}
	}
	if f.Events == nil {
		f.Events = []string{}
	}
	s.subs.set(newSubscription(c, f))
	c.log.Info("rpc subscriber registered", "msg_types", f.MsgTypes, "events", f.Events)
	return f, nil
}

// deliver hands a callback push to a matching subscriber, round-robin, as
// a callback.message request with msg as params, and waits for its answer
// until ctx ends (the callback's reply deadline). It returns the reply
// object, nil for "no passive reply", and ok false when no subscriber took
// the message (none matches, or all went away), so the rules answer. A
// subscriber found disconnected is dropped and the next one tried; an
// answer after ctx ends is dropped with a log line by the stream.
func (s *Server) deliver(ctx context.Context, msgType, event string, msg any) (reply json.RawMessage, ok bool, err error) {
	for _, sub := range s.subs.pick(msgType, event) {
		result, err := sub.c.st.call(ctx, "callback.message", msg)
		switch {
		case errors.Is(err, jsonrpc2.ErrClosed):
			sub.c.log.Info("subscriber gone, trying the next one")
			s.subs.remove(sub.c)
			continue
		case ctx.Err() != nil:
			sub.c.log.Info("subscriber did not answer callback.message in time", "msg_type", msgType, "event", event)
			return nil, true, fmt.Errorf("subscriber %s: %w", sub.c.name, ctx.Err())
		case err != nil:
			sub.c.log.Info("subscriber answered callback.message with an error", "err", err)
			return nil, true, fmt.Errorf("subscriber %s: %w", sub.c.name, err)
		}
		reply, err := replyOf(result)
		if err != nil {
			sub.c.log.Info("subscriber answered callback.message with a bad result", "err", err)
			return nil, true, fmt.Errorf("subscriber %s: %w", sub.c.name, err)
		}
		return reply, true, nil
	}
	return nil, false, nil
}

// replyOf reads a callback.message result: {"reply": {...}}, {"reply":
// null} or null.
func replyOf(result json.RawMessage) (json.RawMessage, error) {
	result = bytes.TrimSpace(result)
	if len(result) == 0 || string(result) == "null" {
		return nil, nil
	}
	var r map[string]json.RawMessage
	if err := json.Unmarshal(result, &r); err != nil {
		return nil, errors.New(`callback.message result must be {"reply": {...}} or null`)
	}
	reply, ok := r["reply"]
	if !ok {
		return nil, errors.New(`callback.message result has no "reply"`)
	}
	if string(bytes.TrimSpace(reply)) == "null" {
		return nil, nil
	}
	return reply, nil
}
