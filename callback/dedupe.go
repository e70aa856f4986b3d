package callback

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"time"

	"wxappliance/kv"
)

// Store is what dedupe needs from storage; kv.Store has it.
type Store interface {
	Get(ctx context.Context, key string) ([]byte, error)
	Put(ctx context.Context, key string, value []byte, ttl time.Duration) error
	PutIfAbsent(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error)
}

// Dedupe records, one per message under "cb/d/<hash>":
//
//	"p"        pending: the first delivery is being answered
//	"d" + body done: body is the exact answer sent, encrypted or not
//
// The first delivery claims the key with PutIfAbsent and replaces it with
// the answer it sends; a retry or replay finds the answer and sends it
// again, byte for byte, without dispatching. A retry that finds the claim
// still pending waits for the answer until its own deadline.
var (
	recordPending = []byte("p")
	recordDone    = byte('d')
)

// dedupePoll is how often a duplicate looks for the first delivery's answer.
const dedupePoll = 20 * time.Millisecond

// dedupeKey identifies a message across WeChat's retries: its MsgId, or for
// events (which have none) sender, creation time and event. The parts are
// hashed so a hostile field cannot make a huge or odd key.
func dedupeKey(m *Message) string {
	h := sha256.New()
	write := func(parts ...string) {
		for _, p := range parts {
			h.Write([]byte(p))
			h.Write([]byte{0})
		}
	}
	if m.MsgID != "" {
		write("msg", m.ToUserName, m.MsgID)
	} else {
		write("evt", m.ToUserName, m.FromUserName, text(m.Raw, "CreateTime"), m.MsgType, m.Event)
	}
	return "cb/d/" + hex.EncodeToString(h.Sum(nil)[:16])
}

// claim reports whether this delivery is the first of its message. When the
// store fails it says yes: answering twice is better than never. The claim
// is made even if WeChat has hung up, so that its retry is recognised.
func (s *Service) claim(ctx context.Context, key string) (first, stored bool) {
	ok, err := s.store.PutIfAbsent(context.WithoutCancel(ctx), key, recordPending, s.dedupeTTL)
	if err != nil {
		s.log.Warn("callback dedupe store failed, answering without dedupe", "err", err)
		return true, false
	}
	return ok, true
}

// remember stores the answer sent for key.
func (s *Service) remember(ctx context.Context, key string, body []byte) {
	rec := make([]byte, 0, len(body)+1)
	rec = append(rec, recordDone)
	rec = append(rec, body...)
	if err := s.store.Put(ctx, key, rec, s.dedupeTTL); err != nil {
		s.log.Warn("callback dedupe store failed, a retry will get success", "err", err)
	}
}

// stored returns the answer the first delivery of key sent, waiting for it
// until deadline; after that, or when it is gone, "success".
func (s *Service) stored(ctx context.Context, key string, deadline time.Time) []byte {
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	tick := time.NewTicker(dedupePoll)
	defer tick.Stop()
	for {
		rec, err := s.store.Get(ctx, key)
		switch {
		case err == nil && len(rec) > 0 && rec[0] == recordDone:
			return rec[1:]
		case err == nil && bytes.Equal(rec, recordPending):
			// The first delivery is still being answered.
		case err == nil:
			s.log.Warn("callback dedupe record of unknown form, answering success", "bytes", len(rec))
			return []byte(Success)
		case errors.Is(err, kv.ErrNotFound):
			// Expired between the claim and now: the first was
			// answered long ago.
			return []byte(Success)
		default:
			if ctx.Err() == nil {
				s.log.Warn("callback dedupe store failed, answering success", "err", err)
			}
			return []byte(Success)
		}
		select {
		case <-tick.C:
		case <-timer.C:
			return []byte(Success)
		case <-ctx.Done():
			return []byte(Success)
		}
	}
}
