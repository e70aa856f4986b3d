package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/100steps/wxappliance/kv"
	"github.com/100steps/wxappliance/rpc"
)

// Advertisements live in one record, advertKey: {"instances": {id:
// {"expires": unix ms, "filter": {...}}}}. One record rather than one per
// instance plus an index: an origin learns where every subscriber is with
// one read, and the writers are few (only instances with subscribers, once
// per refresh or change), so the compare-and-swap loops rarely collide.
// Each entry carries its own expiry, so a crashed instance's entry is
// ignored by readers once it passes and pruned by the next writer; the
// record's own TTL removes it when every instance is gone.
type advert struct {
	Instances map[string]advertEntry `json:"instances"`
}

type advertEntry struct {
	Expires int64      `json:"expires"` // Unix milliseconds, by the writer's clock
	Filter  rpc.Filter `json:"filter"`
}

func (e advertEntry) live(now time.Time) bool { return now.UnixMilli() < e.Expires }

// maxAdvertNames bounds the names an instance advertises. Past it the
// instance advertises everything instead: an origin may then send it a
// message none of its subscribers takes, which it declines, and the origin
// tries the next.
const maxAdvertNames = 1024

// union is one filter that matches a message exactly when one of fs does,
// by rpc.Filter's rule: an empty filter takes everything, and otherwise a
// filter is a disjunction of names, so the union of the names is exact.
// ok is false when fs is empty.
func union(fs []rpc.Filter) (f rpc.Filter, ok bool) {
	if len(fs) == 0 {
		return rpc.Filter{}, false
	}
	types, events := map[string]bool{}, map[string]bool{}
	for _, f := range fs {
		if len(f.MsgTypes) == 0 && len(f.Events) == 0 {
			return rpc.Filter{MsgTypes: []string{}, Events: []string{}}, true
		}
		for _, t := range f.MsgTypes {
			types[strings.ToLower(t)] = true
		}
		for _, e := range f.Events {
			events[strings.ToLower(e)] = true
		}
	}
	if len(types)+len(events) > maxAdvertNames {
		return rpc.Filter{MsgTypes: []string{}, Events: []string{}}, true
	}
	return rpc.Filter{
		MsgTypes: slices.Sorted(maps.Keys(types)),
		Events:   slices.Sorted(maps.Keys(events)),
	}, true
}

func sameFilter(a, b rpc.Filter) bool {
	return slices.Equal(a.MsgTypes, b.MsgTypes) && slices.Equal(a.Events, b.Events)
}

// readAdvert returns the advertisement record and its stored bytes (nil
// when there is none). A record that does not decode is treated as empty,
// so that the next writer replaces it.
func readAdvert(ctx context.Context, store kv.Store) (advert, []byte, error) {
	raw, err := store.Get(ctx, advertKey)
	if errors.Is(err, kv.ErrNotFound) {
		return advert{Instances: map[string]advertEntry{}}, nil, nil
	}
	if err != nil {
		return advert{}, nil, err
	}
	var a advert
	if json.Unmarshal(raw, &a) != nil || a.Instances == nil {
		a.Instances = map[string]advertEntry{}
	}
	return a, raw, nil
}

// maxAdvertRounds bounds the compare-and-swap loop of updateAdvert: only a
// handful of instances write, so losing this many rounds in a row means
// something is wrong.
const maxAdvertRounds = 50

// updateAdvert applies change to the advertisement record atomically (a
// compare-and-swap loop on the one key), pruning expired entries on the
// way. ttl is the record's own lifetime.
func updateAdvert(ctx context.Context, store kv.Store, ttl time.Duration, change func(map[string]advertEntry)) error {
	for range maxAdvertRounds {
		a, old, err := readAdvert(ctx, store)
		if err != nil {
			return fmt.Errorf("cluster: read advertisements: %w", err)
		}
		change(a.Instances)
		now := time.Now()
		maps.DeleteFunc(a.Instances, func(_ string, e advertEntry) bool { return !e.live(now) })
		var done bool
		switch {
		case len(a.Instances) == 0 && old == nil:
			return nil
		case len(a.Instances) == 0:
			done, err = store.CompareAndDelete(ctx, advertKey, old)
		default:
			next, merr := json.Marshal(a)
			if merr != nil {
				return merr
			}
			if old == nil {
				done, err = store.PutIfAbsent(ctx, advertKey, next, ttl)
			} else {
				done, err = store.CompareAndSwap(ctx, advertKey, old, next, ttl)
			}
		}
		if err != nil {
			return fmt.Errorf("cluster: write advertisements: %w", err)
		}
		if done {
			return nil
		}
		// Another instance wrote in between: a short random pause keeps the
		// losers from colliding again in step.
		if err := sleep(ctx, time.Duration(rand.N(5_000))*time.Microsecond); err != nil {
			return ctx.Err()
		}
	}
	return errors.New("cluster: advertisements: too many concurrent writers")
}
