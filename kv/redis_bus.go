package kv

import (
	"context"
	"errors"

	"github.com/redis/go-redis/v9"
)

// redisBusBuffer is how many notices a slow subscriber may have pending
// before it starts losing them, as for LocalBus.
const redisBusBuffer = 16

// Publish sends msg to the subscribers of channel on every instance.
func (r *Redis) Publish(ctx context.Context, channel string, msg []byte) error {
	if err := r.check(ctx); err != nil {
		return err
	}
	return r.wrap(ctx, "publish", r.client.Publish(ctx, r.prefix+channel, msg).Err())
}

// Subscribe returns the notices published on channel from now on: it
// returns only once Redis has confirmed the subscription. The channel is
// closed when ctx ends or the store is closed.
//
// If the connection breaks (Redis restarted, failed over), go-redis dials
// again and subscribes again by itself; notices published in between are
// lost, which a Bus allows.
func (r *Redis) Subscribe(ctx context.Context, channel string) (<-chan []byte, error) {
	if err := r.check(ctx); err != nil {
		return nil, err
	}
	name := r.prefix + channel
	// Subscribing in a second step, rather than by passing name here,
	// lets a failure to send SUBSCRIBE end the call at once instead of
	// after a second attempt in confirm.
	ps := r.client.Subscribe(ctx)
	err := ps.Subscribe(ctx, name)
	if err == nil {
		err = r.confirm(ctx, ps)
	}
	if err != nil {
		ps.Close()
		return nil, r.wrap(ctx, "subscribe", err)
	}
	out := make(chan []byte, redisBusBuffer)
	// The reconnecting receive loop lives inside go-redis; this goroutine
	// only forwards, so it cannot block on anything but its three exits.
	in := ps.Channel(redis.WithChannelSize(redisBusBuffer))
	go func() {
		defer close(out)
		defer ps.Close()
		for {
			select {
			case <-ctx.Done():
				return
			case <-r.done:
				return
			case m, ok := <-in:
				if !ok {
					if !r.closed.Load() {
						r.log.Warn("kv: redis subscription ended", "channel", channel)
					}
					return
				}
				select {
				case out <- []byte(m.Payload):
				default:
				}
			}
		}
	}()
	return out, nil
}

// confirm waits for Redis to acknowledge the subscription, bounded like a
// command so that a stalled Redis cannot hang the caller.
func (r *Redis) confirm(ctx context.Context, ps *redis.PubSub) error {
	msg, err := ps.ReceiveTimeout(ctx, r.readTimeout)
	if err != nil {
		return err
	}
	if _, ok := msg.(*redis.Subscription); !ok {
		return errors.New("unexpected reply to SUBSCRIBE")
	}
	return nil
}
