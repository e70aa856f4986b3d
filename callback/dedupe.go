package callback

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"sync"
	"time"

	"github.com/100steps/wxappliance/kv"
)

// Store is what dedupe needs from storage; kv.Store has it.
type Store interface {
	Get(ctx context.Context, key string) ([]byte, error)
	PutIfAbsent(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error)
	CompareAndSwap(ctx context.Context, key string, old, value []byte, ttl time.Duration) (bool, error)
}

// Instances tells the processes that share a dedupe store apart, so that a
// retry can tell a claim still being answered from one whose process died
// answering it.
type Instances interface {
	// Self is this process's id, recorded in its claims: the same for the
	// process's whole life, never reused by another process.
	Self() string
	// Alive reports whether the process id may still answer its claims.
	// It is asked at every poll (dedupePoll) while a retry waits, so a
	// networked implementation should answer from a cache; never about
	// Self, nor about claims that name no process (they are dead). When
	// it fails, the claimer is taken as alive.
	Alive(ctx context.Context, id string) (bool, error)
}

// soleInstance is the default Instances: only this process is alive. That
// is right for Badger, which one process holds at a time (its directory
// lock), so any other id in a claim is a predecessor that died.
type soleInstance string

func (s soleInstance) Self() string { return string(s) }

func (s soleInstance) Alive(_ context.Context, id string) (bool, error) {
	return id == string(s), nil
}

// processInstance is this process's id: random at every start, shared by
// all Services in the process, so that a Service rebuilt in a running
// process never mistakes its predecessor's claims for a dead process's.
var processInstance = sync.OnceValue(func() string {
	var b [8]byte
	rand.Read(b[:]) // never fails
	return hex.EncodeToString(b[:])
})

// Dedupe records, one per message under "cb/d/<hash>":
//
//	"p" + id   pending: the process id is answering the first delivery
//	"d" + body done: body is the exact answer sent, encrypted or not
//
// The first delivery claims the key with PutIfAbsent and replaces its claim
// with the answer it sends; a retry or replay finds the answer and sends
// it again, byte for byte, without dispatching. A retry that finds the
// claim still pending waits for the answer until its own deadline, unless
// the claimer is dead (it crashed while answering): then the retry takes
// the claim over with CompareAndSwap, so of several concurrent retries
// exactly one dispatches again, and each process dispatches a message at
// most once. A bare "p", written by versions that recorded no id, is a
// dead claimer's.
const (
	recordPending = 'p'
	recordDone    = 'd'
)

// dedupePoll is how often a duplicate looks for the first delivery's answer.
const dedupePoll = 20 * time.Millisecond

// dedupePrefix starts every dedupe record's key.
const dedupePrefix = "cb/d/"

// dedupeKey is where the dedupe record of m lives.
func dedupeKey(m *Message) string { return dedupePrefix + messageID(m) }

// messageID identifies a message across WeChat's retries: its MsgId, or for
// events (which have none) sender, creation time and event. The parts are
// hashed so a hostile field cannot make a huge or odd key.
func messageID(m *Message) string {
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
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// claim reports whether this delivery is the first of its message. When the
// store fails it says yes: answering twice is better than never. The claim
// is made even if WeChat has hung up, so that its retry is recognised.
func (s *Service) claim(ctx context.Context, key string) (first, stored bool) {
	ok, err := s.store.PutIfAbsent(context.WithoutCancel(ctx), key, s.claimRecord, s.dedupeTTL)
	if err != nil {
		s.log.Warn("callback dedupe store failed, answering without dedupe", "err", err)
		return true, false
	}
	return ok, true
}

// remember replaces this process's claim on key with the answer sent. A
// claim taken over meanwhile (this process was wrongly thought dead) keeps
// the taker's answer.
func (s *Service) remember(ctx context.Context, key string, body []byte) {
	rec := make([]byte, 0, len(body)+1)
	rec = append(rec, recordDone)
	rec = append(rec, body...)
	ok, err := s.store.CompareAndSwap(ctx, key, s.claimRecord, rec, s.dedupeTTL)
	switch {
	case errors.Is(err, kv.ErrNoSpace):
		// The store reports a full disk once, on /readyz and in the
		// log; a line per message would only add to it. The answer is
		// kept in memory for this process's retries (LocalStore).
		s.log.Debug("callback answer not stored: disk full", "err", err)
	case err != nil:
		s.log.Warn("callback dedupe store failed, a retry will get success", "err", err)
	case !ok:
		s.log.Warn("callback claim was taken over by another instance, this answer is not stored")
	}
}

// stored returns the answer the first delivery of key sent, waiting for it
// until deadline; after that, or when it is gone, "success". When the
// first delivery's process died before answering, it takes the claim over
// instead and reports takenOver: the caller must dispatch.
func (s *Service) stored(ctx context.Context, key string, deadline time.Time) (body []byte, takenOver bool) {
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	tick := time.NewTicker(dedupePoll)
	defer tick.Stop()
	var warned bool // about liveness, once per retry rather than per poll
	for {
		rec, err := s.store.Get(ctx, key)
		switch {
		case err == nil && len(rec) > 0 && rec[0] == recordDone:
			return rec[1:], false
		case err == nil && len(rec) > 0 && rec[0] == recordPending:
			if s.claimerDead(ctx, string(rec[1:]), &warned) && s.takeOver(ctx, key, rec) {
				return nil, true
			}
			// Being answered, or another retry took it over.
		case err == nil:
			s.log.Warn("callback dedupe record of unknown form, answering success", "bytes", len(rec))
			return []byte(Success), false
		case errors.Is(err, kv.ErrNotFound):
			// Expired between the claim and now: the first was
			// answered long ago.
			return []byte(Success), false
		default:
			if ctx.Err() == nil {
				s.log.Warn("callback dedupe store failed, answering success", "err", err)
			}
			return []byte(Success), false
		}
		select {
		case <-tick.C:
		case <-timer.C:
			return []byte(Success), false
		case <-ctx.Done():
			return []byte(Success), false
		}
	}
}

// claimerDead reports whether the process that claimed a message can no
// longer answer it. When that cannot be told, it is taken as alive: waiting
// in vain costs one answer, dispatching twice could cost two.
func (s *Service) claimerDead(ctx context.Context, id string, warned *bool) bool {
	switch id {
	case s.instances.Self():
		return false
	case "":
		return true
	}
	alive, err := s.instances.Alive(ctx, id)
	if err != nil {
		if ctx.Err() == nil && !*warned {
			s.log.Warn("callback cannot tell whether a claimer is alive, waiting for it", "err", err)
			*warned = true
		}
		return false
	}
	return !alive
}

// takeOver replaces a dead claimer's claim rec with this process's. Of
// concurrent retries, whichever process they are in, exactly one succeeds.
func (s *Service) takeOver(ctx context.Context, key string, rec []byte) bool {
	ok, err := s.store.CompareAndSwap(context.WithoutCancel(ctx), key, rec, s.claimRecord, s.dedupeTTL)
	if err != nil {
		s.log.Warn("callback dedupe store failed taking over a claim", "err", err)
		return false
	}
	return ok
}
