package callback

import (
	"context"
	"time"
)

// lateSendTimeout bounds the customer service call of a late reply.
const lateSendTimeout = 10 * time.Second

// lateReply handles a subscriber's answer that came after the passive
// answer was sent: sent once as a customer service message when a
// LateSender is set, else dropped. Once means once per message, whoever
// dispatched it: a record under the message's dedupe key is claimed first,
// so neither a re-dispatch after a crash nor another instance sends it
// again.
func (s *Service) lateReply(ctx context.Context, msg *Message, reply *Reply, source Source, err error) {
	attrs := []any{"msg_type", msg.MsgType, "event", msg.Event, "msg_id", msg.MsgID, "source", string(source)}
	switch {
	case s.late == nil:
		s.log.Warn("callback reply came after the deadline and was dropped (callback.late_reply is \"drop\")", attrs...)
		return
	case err != nil:
		s.log.Info("callback late dispatch failed; nothing to send", append(attrs, "err", err)...)
		return
	case reply == nil:
		return // handled, no reply: nothing owed
	}
	first, err := s.store.PutIfAbsent(ctx, "cb/l/"+messageID(msg), s.claimRecord, s.dedupeTTL)
	switch {
	case err != nil:
		// Sending without the record could send twice; not sending loses
		// one late reply. The user already has "success".
		s.log.Warn("callback late reply not sent: the store cannot record it", append(attrs, "err", err)...)
		return
	case !first:
		s.log.Info("callback late reply already sent for this message", attrs...)
		return
	}
	sctx, cancel := context.WithTimeout(ctx, lateSendTimeout)
	defer cancel()
	if err := s.late.SendLate(sctx, msg, reply); err != nil {
		s.log.Info("callback late reply not delivered", append(attrs, "err", err)...)
		return
	}
	s.log.Info("callback late reply sent as a customer service message", attrs...)
}
