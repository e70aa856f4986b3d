package oauth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"sync"
	"time"
)

// Every logged-in request asks for its session, and reading it from the
// store (a Badger transaction or a Redis round trip, and a JSON decode)
// was a fifth of the CPU of GET /auth/user/openid under load. Sessions
// keeps the sessions it read in memory, as long as it can be sure they
// are still what the store holds:
//
//   - every change goes through Sessions (a refresh, a logout, a refused
//     refresh_token), which drops its copy after writing the store, so a
//     read racing the change cannot put the old value back: a read that
//     began before a drop (an older epoch) is not kept;
//   - a copy never outlives the session: it is dropped at the expiry the
//     record carries (records written before it carried one are not
//     kept);
//   - with other instances on the store (Redis), each change is announced
//     on the bus and every instance drops its copy at once. The bus can
//     lose a notice (a connection breaking), so copies are only kept while
//     subscribed, and for sharedMaxAge at most.
const (
	// sessionCacheSize bounds the copies kept: about 500 bytes each.
	sessionCacheSize = 4096
	// sharedMaxAge bounds how stale a copy can be when a notice from
	// another instance was lost.
	sharedMaxAge = time.Second
	// expiryMargin keeps a copy from outliving a store that rounds its
	// expiry down.
	expiryMargin = time.Second
	// sessionChannel carries the ids (hashed) of changed sessions.
	sessionChannel = "sess/changed"
)

// sessionCache holds sessions by their store key's hash. The zero value
// keeps nothing until enabled.
type sessionCache struct {
	mu      sync.RWMutex
	entries map[string]cachedSession
	epoch   uint64
	// keep says whether reads may be kept: always for a store nobody
	// else writes, only while subscribed to the others' notices for a
	// shared one.
	keep   bool
	maxAge time.Duration // 0: until the session expires
}

type cachedSession struct {
	sess  Session
	until time.Time
}

// sessionHash is the part of a session's store key after the prefix: the
// hex sha256 of its id. It is all that notices carry.
func sessionHash(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:])
}

// get returns the kept copy of the session with hash h, if it is still
// good at now.
func (c *sessionCache) get(h string, now time.Time) (Session, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	e, ok := c.entries[h]
	if !ok || !now.Before(e.until) {
		return Session{}, false
	}
	return e.sess, true
}

// begin returns the epoch a read from the store starts in.
func (c *sessionCache) begin() uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.epoch
}

// put keeps sess, read from the store in epoch, unless a change was
// dropped since the read began or the copy would be good for no time.
func (c *sessionCache) put(h string, sess Session, epoch uint64, now time.Time) {
	until := sess.ExpiresAt.Add(-expiryMargin)
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.keep || epoch != c.epoch {
		return
	}
	if c.maxAge > 0 && now.Add(c.maxAge).Before(until) {
		until = now.Add(c.maxAge)
	}
	if !now.Before(until) {
		return
	}
	if c.entries == nil {
		c.entries = make(map[string]cachedSession)
	}
	if _, ok := c.entries[h]; !ok && len(c.entries) >= sessionCacheSize {
		for old := range c.entries { // a random one: map order
			delete(c.entries, old)
			break
		}
	}
	c.entries[h] = cachedSession{sess: sess, until: until}
}

// drop forgets the session with hash h, and makes reads that began
// before it forget theirs.
func (c *sessionCache) drop(h string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.epoch++
	delete(c.entries, h)
}

// setKeep turns keeping on or off; off forgets everything, since notices
// may be lost from then on.
func (c *sessionCache) setKeep(keep bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.keep = keep
	if !keep {
		c.epoch++
		clear(c.entries)
	}
}

// changed drops the session with hash h here and, on a shared store, on
// every instance. Call it after the store was written.
func (s *Sessions) changed(ctx context.Context, h string) {
	s.cache.drop(h)
	if s.bus == nil {
		return
	}
	if err := s.bus.Publish(context.WithoutCancel(ctx), sessionChannel, []byte(h)); err != nil {
		s.log.Warn("could not tell the other instances a session changed; their copies expire within a second", "err", err)
	}
}

// Run keeps the session cache in step with the other instances until ctx
// ends: copies are kept only while subscribed to their notices. Without a
// bus (a store nobody else writes) there is nothing to follow.
func (s *Sessions) Run(ctx context.Context) {
	if s.bus == nil {
		return
	}
	defer s.cache.setKeep(false)
	backoff := time.Second
	for ctx.Err() == nil {
		notices, err := s.bus.Subscribe(ctx, sessionChannel)
		if err != nil {
			s.log.Warn("could not subscribe to session notices; sessions are read from the store meanwhile", "err", err, "retry_in", backoff)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return
			}
			backoff = min(backoff*2, time.Minute)
			continue
		}
		backoff = time.Second
		s.cache.setKeep(true)
		for h := range notices {
			s.cache.drop(string(h))
		}
		s.cache.setKeep(false)
	}
}
