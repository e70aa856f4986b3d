package callback

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/100steps/wxappliance/kv"
)

// Journal keeps the answers of a process whose store no other process
// shares: kv.Journal, records written once that live a few minutes.
type Journal interface {
	Get(ctx context.Context, key string) ([]byte, error)
	Put(ctx context.Context, key string, value []byte, ttl time.Duration) error
}

// LocalStore is the dedupe Store for a process that shares its store with
// no other (Badger, which one process holds at a time). What the dedupe
// records need from a store is less than a store offers:
//
//   - a claim ("p" + instance) must be exclusive while its process lives,
//     and after a crash it must read as a dead process's claim, so that the
//     next retry dispatches again. A claim that is not there at all reads
//     the same way, so claims are kept in memory, where the check and the
//     insert are one critical section and cost nothing durable.
//   - an answer ("d" + body) must be written before it is sent and found by
//     any retry, after a crash too: it is appended to the journal, which
//     writes it with one write(2) and never rewrites it.
//
// Every guarantee of the dedupe (see Handle) holds as with a kv.Store; a
// claim only ever waits on, or is taken over from, a claim of this process
// or none.
//
// The claims are the process's: every Service of the process on j shares
// them (as they share processInstance), so one rebuilt while another is
// answering waits for it instead of dispatching again.
func LocalStore(j Journal) Store {
	s, _ := localStores.LoadOrStore(j, &localStore{journal: j, claims: map[string]localClaim{}, now: time.Now})
	return s.(*localStore)
}

// localStores holds the process's claims per journal.
var localStores sync.Map // Journal -> *localStore

type localStore struct {
	journal Journal
	now     func() time.Time

	// mu makes each method one step over the claims and the journal; the
	// journal only holds answers, which replace claims and never change.
	mu        sync.Mutex
	claims    map[string]localClaim
	lastSweep time.Time
}

// localClaim is a record held in memory: a claim, or an answer the journal
// refused (a full disk), kept so that a retry still gets it.
type localClaim struct {
	rec     []byte
	expires time.Time
}

// sweepEvery bounds how long records the journal refused stay in memory
// after they expire.
const sweepEvery = time.Minute

// get returns key's record, from memory or the journal. Call with mu held.
func (l *localStore) get(ctx context.Context, key string, now time.Time) ([]byte, error) {
	if c, ok := l.claims[key]; ok && now.Before(c.expires) {
		return c.rec, nil
	}
	return l.journal.Get(ctx, key)
}

func (l *localStore) Get(ctx context.Context, key string) ([]byte, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	rec, err := l.get(ctx, key, l.now())
	return bytes.Clone(rec), err
}

func (l *localStore) PutIfAbsent(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweep(now)
	switch _, err := l.get(ctx, key, now); {
	case err == nil:
		return false, nil
	case !errors.Is(err, kv.ErrNotFound):
		return false, err
	}
	l.claims[key] = localClaim{rec: bytes.Clone(value), expires: now.Add(ttl)}
	return true, nil
}

func (l *localStore) CompareAndSwap(ctx context.Context, key string, old, value []byte, ttl time.Duration) (bool, error) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	cur, err := l.get(ctx, key, now)
	switch {
	case errors.Is(err, kv.ErrNotFound):
		return false, nil
	case err != nil:
		return false, err
	case !bytes.Equal(cur, old):
		return false, nil
	}
	held := localClaim{rec: bytes.Clone(value), expires: now.Add(ttl)}
	if len(value) == 0 || value[0] != recordDone {
		l.claims[key] = held // a claim taken over: memory, like any claim
		return true, nil
	}
	// The answer replaces the claim, which stays in place meanwhile: a
	// retry waits for the answer, a new claim is refused. The write
	// happens outside mu, so claims of other messages do not queue
	// behind it.
	l.mu.Unlock()
	err = l.journal.Put(ctx, key, value, ttl)
	l.mu.Lock()
	if c, ok := l.claims[key]; !ok || !bytes.Equal(c.rec, old) {
		// Taken over meanwhile (a Service of this process with other
		// Instances): the claim is no longer this caller's to remove.
		return true, err
	}
	if err != nil {
		// Sent anyway: retries of this process still get it.
		l.claims[key] = held
		return true, fmt.Errorf("answer kept in memory only: %w", err)
	}
	delete(l.claims, key)
	return true, nil
}

// sweep drops the records that expired in memory, at most once a
// sweepEvery. Call with mu held.
func (l *localStore) sweep(now time.Time) {
	if now.Sub(l.lastSweep) < sweepEvery {
		return
	}
	l.lastSweep = now
	for key, c := range l.claims {
		if !now.Before(c.expires) {
			delete(l.claims, key)
		}
	}
}

// Legacy is a store that held the dedupe records before LocalStore did:
// the Badger store itself, in earlier versions.
type Legacy interface {
	EachPrefix(ctx context.Context, prefix string, fn func(key string, value []byte, expiresAt time.Time) error) error
	Delete(ctx context.Context, key string) error
}

// ImportAnswers moves the answers that a previous version stored in from
// into j, so that a retry arriving just after an upgrade still gets its
// answer, and deletes every dedupe record from from: claims there are a
// dead process's, which a retry takes over by dispatching again anyway.
// It is quick when there is nothing to move (Badger seeks to the prefix).
func ImportAnswers(ctx context.Context, from Legacy, j Journal) (int, error) {
	var keys []string
	moved := 0
	err := from.EachPrefix(ctx, dedupePrefix, func(key string, value []byte, expiresAt time.Time) error {
		keys = append(keys, key)
		ttl := time.Until(expiresAt)
		if len(value) == 0 || value[0] != recordDone || ttl <= 0 || !strings.HasPrefix(key, dedupePrefix) {
			return nil
		}
		moved++
		return j.Put(ctx, key, value, ttl)
	})
	if err != nil {
		return moved, err
	}
	for _, key := range keys {
		if err := from.Delete(ctx, key); err != nil {
			return moved, err
		}
	}
	return moved, nil
}
