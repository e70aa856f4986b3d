package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/100steps/wxappliance/callback"
)

// request is an attempt on the bus, from origin to target.
type request struct {
	ID   string `json:"id"`   // the attempt, and its key under attemptKeyPrefix
	From string `json:"from"` // the origin, whose answer channel gets the answer
	// Deadline is the origin's reply deadline (Unix milliseconds); Budget
	// the milliseconds it had left when it sent. The target waits until
	// the earlier of the two by its own clock, so a clock running ahead of
	// the origin's only makes it give up early.
	Deadline int64           `json:"deadline"`
	Budget   int64           `json:"budget"`
	Msg      json.RawMessage `json:"msg"` // the callback.Message
}

func (q request) deadline(received time.Time) time.Time {
	d := time.UnixMilli(q.Deadline)
	if byBudget := received.Add(time.Duration(q.Budget) * time.Millisecond); byBudget.Before(d) {
		return byBudget
	}
	return d
}

// answer is how an attempt ended, on the bus and in the attempt's key.
type answer struct {
	ID      string          `json:"id"`
	Outcome string          `json:"outcome"`
	Reply   *callback.Reply `json:"reply,omitempty"`
	Error   string          `json:"error,omitempty"`
}

// Outcomes of an attempt.
const (
	outcomeAnswered = "answered"  // a subscriber took it; Reply, or none
	outcomeFailed   = "failed"    // a subscriber took it and failed: Error
	outcomeBadReply = "bad_reply" // a subscriber took it and answered an invalid reply
	outcomeDeclined = "declined"  // nobody took it: the origin may try another instance
)

// The attempt key holds one byte of state and its data:
//
//	'c' + instance id   claimed: that instance is delivering it
//	'w'                 withdrawn by the origin: nobody will deliver it
//	'a' + answer JSON   answered (or declined after a claim)
const (
	stateClaimed   = 'c'
	stateWithdrawn = 'w'
	stateAnswered  = 'a'
)

// attemptTTL keeps an attempt's key well past its deadline, so that a
// request arriving late (a slow bus, a clock behind) finds it withdrawn
// rather than free.
func attemptTTL(deadline time.Time) time.Duration {
	return max(time.Until(deadline), 0) + time.Minute
}

// defaultDeadline bounds a delivery whose context has none; the callback
// always gives one (callback.reply_timeout).
const defaultDeadline = 5 * time.Second

// Deliver implements callback.Subscriber. A local subscriber is asked
// first; when none matches, the instances whose advertised filters match
// are tried in turn, each until it takes the message or lets it go. ok is
// false when nobody took the message, so the rules answer. When an instance
// took it and gave no answer before ctx ended, ok is true with an error:
// the message may have reached a backend, so it must not go anywhere else.
func (r *Relay) Deliver(ctx context.Context, msg *callback.Message) (reply *callback.Reply, ok bool, err error) {
	defer func() {
		if p := recover(); p != nil {
			r.log.Error("cluster: panic delivering a message", "panic", p)
			reply, ok, err = nil, true, fmt.Errorf("cluster: panic: %v", p)
		}
	}()
	if reply, ok, err := r.local.Deliver(ctx, msg); ok {
		r.stats.local.Add(1)
		return reply, ok, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultDeadline)
		defer cancel()
	}
	ads, err := r.advertisements(ctx)
	if err != nil {
		r.log.Warn("cluster: could not read which instances have subscribers; the rules answer", "err", err)
		return nil, false, nil
	}
	targets := r.candidates(ads, msg.MsgType, msg.Event)
	if len(targets) == 0 {
		return nil, false, nil
	}
	body, err := json.Marshal(msg)
	if err != nil {
		return nil, false, fmt.Errorf("cluster: encode message: %w", err)
	}
	for _, target := range targets {
		if ctx.Err() != nil {
			break
		}
		a, settled := r.forward(ctx, target, body)
		if !settled {
			r.stats.unsettled.Add(1)
			return nil, true, fmt.Errorf("cluster: instance %s took the message and gave no answer in time: %w", target, ctx.Err())
		}
		if a.Outcome != outcomeDeclined {
			r.stats.remote.Add(1)
			return a.result(target)
		}
	}
	return nil, false, nil
}

// candidates are the other instances whose live advertisement matches, in
// an order that rotates from one message to the next.
func (r *Relay) candidates(ads map[string]advertEntry, msgType, event string) []string {
	now := time.Now()
	var ids []string
	for id, e := range ads {
		if id != r.id && e.live(now) && e.Filter.Matches(msgType, event) {
			ids = append(ids, id)
		}
	}
	if len(ids) < 2 {
		return ids
	}
	slices.Sort(ids)
	k := int(r.turn.Add(1) % uint64(len(ids)))
	return append(ids[k:], ids[:k]...)
}

// forward makes one attempt on target and waits for its outcome. settled is
// false when ctx ended with the attempt taken (or its state unknown), and
// then nobody else may be asked.
func (r *Relay) forward(ctx context.Context, target string, body []byte) (a answer, settled bool) {
	deadline, _ := ctx.Deadline()
	id := newAttemptID()
	key := attemptKeyPrefix + id
	answers := r.pending.add(id)
	defer r.pending.remove(id)

	req, err := json.Marshal(request{
		ID:       id,
		From:     r.id,
		Deadline: deadline.UnixMilli(),
		Budget:   time.Until(deadline).Milliseconds(),
		Msg:      body,
	})
	if err != nil {
		return answer{Outcome: outcomeDeclined}, true
	}
	r.stats.forwarded.Add(1)
	if err := r.bus.Publish(ctx, requestChannel+target, req); err != nil {
		// It may have gone out all the same: the store settles it below.
		r.log.Warn("cluster: could not send a message to another instance", "target", target, "err", err)
	}

	claimed := false
	timer := time.NewTimer(min(r.cfg.ClaimWait, time.Until(deadline)/2))
	defer timer.Stop()
	for {
		select {
		case a := <-answers:
			if a.Outcome == outcomeDeclined {
				r.stats.declined.Add(1)
			}
			return a, true
		case <-ctx.Done():
			return answer{}, false
		case <-timer.C:
		}
		r.stats.checked.Add(1)
		if !claimed {
			withdrawn, err := r.store.PutIfAbsent(ctx, key, []byte{stateWithdrawn}, attemptTTL(deadline))
			if err == nil && withdrawn {
				r.stats.withdrawn.Add(1)
				r.log.Info("cluster: another instance did not take a message in time; trying the next", "target", target, "attempt", id)
				return answer{Outcome: outcomeDeclined}, true
			}
		}
		if a, ok := r.lookup(ctx, key); ok {
			if a.Outcome != "" {
				r.stats.polled.Add(1)
				if a.Outcome == outcomeDeclined {
					r.stats.declined.Add(1)
				}
				return a, true
			}
			claimed = true
		}
		timer.Reset(r.cfg.ClaimWait)
	}
}

// lookup reads an attempt's state: ok is false when it is unknown (the
// store failed, or nothing is there); a zero answer means claimed and not
// answered yet.
func (r *Relay) lookup(ctx context.Context, key string) (answer, bool) {
	raw, err := r.store.Get(ctx, key)
	if err != nil || len(raw) == 0 {
		return answer{}, false
	}
	switch raw[0] {
	case stateClaimed:
		return answer{}, true
	case stateWithdrawn:
		// Ours, though the withdrawal's answer was lost on the way.
		return answer{Outcome: outcomeDeclined}, true
	case stateAnswered:
		var a answer
		if err := json.Unmarshal(raw[1:], &a); err != nil || a.Outcome == "" {
			return answer{Outcome: outcomeFailed, Error: "unreadable stored answer"}, true
		}
		return a, true
	}
	return answer{}, false
}

// result turns a settled answer into Deliver's results.
func (a answer) result(target string) (*callback.Reply, bool, error) {
	switch a.Outcome {
	case outcomeAnswered:
		return a.Reply, true, nil
	case outcomeBadReply:
		return nil, true, fmt.Errorf("instance %s: %w: %s", target, callback.ErrBadReply, a.Error)
	default:
		return nil, true, fmt.Errorf("instance %s: %s", target, a.Error)
	}
}

func newAttemptID() string {
	var b [16]byte
	rand.Read(b[:]) // never fails
	return hex.EncodeToString(b[:])
}
