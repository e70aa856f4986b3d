package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/100steps/wxappliance/callback"
)

// accept takes an attempt from the bus. It runs on the bus reader, so it
// only checks and starts the delivery: a reader that falls behind loses
// notices.
func (r *Relay) accept(ctx context.Context, raw []byte) {
	received := time.Now()
	var req request
	if err := json.Unmarshal(raw, &req); err != nil || req.ID == "" || validateID(req.From) != nil {
		r.log.Warn("cluster: unreadable request on the bus", "err", err)
		return
	}
	deadline := req.deadline(received)
	if !received.Before(deadline) {
		r.stats.refused.Add(1)
		r.log.Info("cluster: a message from another instance came after its deadline; dropped", "origin", req.From, "attempt", req.ID)
		return
	}
	select {
	case r.slots <- struct{}{}:
	default:
		// No answer: the origin withdraws the attempt after ClaimWait.
		r.stats.refused.Add(1)
		r.log.Warn("cluster: too many messages from other instances at once; leaving this one to its origin", "origin", req.From, "max_in_flight", r.cfg.MaxInFlight)
		return
	}
	r.serving.Add(1)
	go func() {
		defer r.serving.Done()
		defer func() { <-r.slots }()
		recovered(r.log, "relay delivery", func() { r.serve(ctx, req, deadline) })
	}()
}

// serve delivers an attempt to a local subscriber, once it has claimed it,
// and answers.
func (r *Relay) serve(ctx context.Context, req request, deadline time.Time) {
	var msg callback.Message
	if err := json.Unmarshal(req.Msg, &msg); err != nil {
		r.log.Warn("cluster: unreadable message from another instance", "origin", req.From, "err", err)
		r.send(ctx, req, answer{ID: req.ID, Outcome: outcomeDeclined})
		return
	}
	if !r.local.Matches(msg.MsgType, msg.Event) {
		// The subscriber left since the origin read the advertisement.
		r.stats.refused.Add(1)
		r.send(ctx, req, answer{ID: req.ID, Outcome: outcomeDeclined})
		return
	}
	key := attemptKeyPrefix + req.ID
	claim := append([]byte{stateClaimed}, r.id...)
	claimed, err := r.store.PutIfAbsent(ctx, key, claim, attemptTTL(deadline))
	if err != nil {
		// The claim may have landed all the same: record the refusal in its
		// place too, so that an origin polling does not wait for us.
		r.stats.refused.Add(1)
		r.log.Warn("cluster: could not take a message from another instance", "origin", req.From, "err", err)
		r.settle(ctx, req, deadline, claim, answer{ID: req.ID, Outcome: outcomeDeclined})
		return
	}
	if !claimed {
		r.stats.refused.Add(1)
		r.log.Info("cluster: a message from another instance was withdrawn before it could be taken", "origin", req.From, "attempt", req.ID)
		return
	}

	dctx, cancel := context.WithDeadline(ctx, deadline.Add(-replyMargin(deadline.Sub(time.Now()))))
	reply, ok, err := r.local.Deliver(dctx, &msg)
	cancel()
	a := answer{ID: req.ID}
	switch {
	case !ok:
		a.Outcome = outcomeDeclined
		r.stats.refused.Add(1)
	case errors.Is(err, callback.ErrBadReply):
		a.Outcome, a.Error = outcomeBadReply, err.Error()
		r.stats.served.Add(1)
	case err != nil:
		a.Outcome, a.Error = outcomeFailed, err.Error()
		r.stats.served.Add(1)
	default:
		a.Outcome, a.Reply = outcomeAnswered, reply
		r.stats.served.Add(1)
	}
	r.settle(ctx, req, deadline, claim, a)
}

// replyMargin is how long before the origin's deadline the target stops
// waiting for its subscriber, so that the answer has time to travel back.
func replyMargin(left time.Duration) time.Duration {
	return min(200*time.Millisecond, left/10)
}

// send publishes a to the origin.
func (r *Relay) send(ctx context.Context, req request, a answer) {
	if ctx.Err() != nil {
		var cancel context.CancelFunc
		ctx, cancel = detached(ctx)
		defer cancel()
	}
	raw, err := json.Marshal(a)
	if err != nil {
		r.log.Error("cluster: encode answer", "err", err)
		return
	}
	if err := r.bus.Publish(ctx, answerChannel+req.From, raw); err != nil {
		r.log.Warn("cluster: could not send an answer to its origin; it reads it from the store", "origin", req.From, "err", err)
	}
}

// settle publishes a claimed attempt's answer and stores it in place of
// the claim, where the origin finds it if the notice is lost.
func (r *Relay) settle(ctx context.Context, req request, deadline time.Time, claim []byte, a answer) {
	r.send(ctx, req, a)
	if ctx.Err() != nil {
		var cancel context.CancelFunc
		ctx, cancel = detached(ctx)
		defer cancel()
	}
	raw, err := json.Marshal(a)
	if err != nil {
		return
	}
	stored := append([]byte{stateAnswered}, raw...)
	if _, err := r.store.CompareAndSwap(ctx, attemptKeyPrefix+req.ID, claim, stored, attemptTTL(deadline)); err != nil {
		r.log.Warn("cluster: could not store an answer", "origin", req.From, "err", err)
	}
}
