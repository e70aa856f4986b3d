package cluster

import (
	"context"
	"maps"
	"slices"
	"time"

	"github.com/100steps/wxappliance/kv"
	"github.com/100steps/wxappliance/rpc"
)

// InstanceKey is the store key of instance id's heartbeat.
func InstanceKey(id string) string { return instanceKeyPrefix + id }

// Advertise writes an advertisement for instance id as its relay would,
// expiring after ttl: how tests leave behind the entry of an instance that
// crashed.
func Advertise(ctx context.Context, store kv.Store, id string, f rpc.Filter, ttl time.Duration) error {
	return updateAdvert(ctx, store, time.Minute, func(m map[string]advertEntry) {
		m[id] = advertEntry{Expires: time.Now().Add(ttl).UnixMilli(), Filter: f}
	})
}

// Advertised lists the instances in the advertisement record, expired
// entries not yet pruned included.
func Advertised(ctx context.Context, store kv.Store) ([]string, error) {
	a, _, err := readAdvert(ctx, store)
	return slices.Sorted(maps.Keys(a.Instances)), err
}

// Candidates are the instances r would try for a message, sorted.
func (r *Relay) Candidates(ctx context.Context, msgType, event string) ([]string, error) {
	ads, err := r.advertisements(ctx)
	if err != nil {
		return nil, err
	}
	ids := r.candidates(ads, msgType, event)
	slices.Sort(ids)
	return ids, nil
}

// Prefixes of the channels attempts go out on and answers come back on.
const (
	RequestChannel = requestChannel
	AnswerChannel  = answerChannel
)
