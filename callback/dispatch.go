package callback

import (
	"context"
	"fmt"
	"sync/atomic"
)

// Subscriber receives messages before the rules, so a backend (connected
// over JSON-RPC) can answer them. The RPC server implements it and is set on
// the Dispatcher once it exists.
type Subscriber interface {
	// Deliver hands msg to whoever subscribed and returns their reply.
	// ok is false when nobody took the message (no backend connected, or
	// none subscribed to this type); the rules then answer. ok with a nil
	// reply means "handled, no passive reply" (the backend may answer
	// later through the customer service API). An error, or a reply that
	// fails Validate, gives "success": the user sees nothing rather than
	// a broken reply. ctx ends at the reply deadline; a reply after it is
	// dropped.
	Deliver(ctx context.Context, msg *Message) (reply *Reply, ok bool, err error)
}

// Source says where a reply came from, for logs.
type Source string

const (
	SourceSubscriber Source = "subscriber"
	SourceRules      Source = "rules"
	SourceNone       Source = "none"
)

// Dispatcher chooses the reply to a message: the subscriber's when one is
// set and takes the message, else the rules', else none. It is safe for
// concurrent use.
type Dispatcher struct {
	rules Rules
	sub   atomic.Pointer[subscriberBox]
}

// subscriberBox lets an interface value live in an atomic.Pointer.
type subscriberBox struct{ Subscriber }

// NewDispatcher returns a Dispatcher with rules, which must be valid.
func NewDispatcher(rules Rules) (*Dispatcher, error) {
	if err := rules.Validate(); err != nil {
		return nil, fmt.Errorf("callback rules: %w", err)
	}
	return &Dispatcher{rules: rules}, nil
}

// SetSubscriber sets (or, with nil, removes) the subscriber. Messages in
// flight keep the one they started with.
func (d *Dispatcher) SetSubscriber(s Subscriber) {
	if s == nil {
		d.sub.Store(nil)
		return
	}
	d.sub.Store(&subscriberBox{s})
}

// matcher is a Subscriber that can tell, without delivering, whether it
// takes a push of msgType and event now (rpc.Server: whether a backend
// subscribed to it is connected).
type matcher interface {
	Matches(msgType, event string) bool
}

// rulesOnly returns the rules' reply to msg, with ok, when no subscriber
// can take msg: then nothing can block or run late, and the caller needs
// no deadline. A subscriber that comes a moment later sees the next
// message.
func (d *Dispatcher) rulesOnly(msg *Message) (reply *Reply, source Source, ok bool) {
	if box := d.sub.Load(); box != nil {
		m, isMatcher := box.Subscriber.(matcher)
		if !isMatcher || m.Matches(msg.MsgType, msg.Event) {
			return nil, "", false
		}
	}
	if reply := d.rules.Reply(msg); reply != nil {
		return reply, SourceRules, true
	}
	return nil, SourceNone, true
}

// Dispatch returns the reply to msg and its source; a nil reply means
// "success". An error (the subscriber failed, or answered an invalid reply)
// comes with a nil reply.
func (d *Dispatcher) Dispatch(ctx context.Context, msg *Message) (*Reply, Source, error) {
	if box := d.sub.Load(); box != nil {
		reply, ok, err := box.Deliver(ctx, msg)
		switch {
		case err != nil:
			return nil, SourceSubscriber, fmt.Errorf("subscriber: %w", err)
		case ok && reply == nil:
			return nil, SourceSubscriber, nil
		case ok:
			if err := reply.Validate(); err != nil {
				return nil, SourceSubscriber, fmt.Errorf("subscriber: %w", err)
			}
			return reply, SourceSubscriber, nil
		}
	}
	if reply := d.rules.Reply(msg); reply != nil {
		return reply, SourceRules, nil
	}
	return nil, SourceNone, nil
}
