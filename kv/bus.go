package kv

import (
	"context"
	"sync"
)

// LocalBus is a Bus inside one process: what a Badger store, which one
// process owns, needs. The zero value is ready to use.
type LocalBus struct {
	mu   sync.Mutex
	subs map[string]map[chan []byte]struct{}
}

var _ Bus = (*LocalBus)(nil)

// localBusBuffer is how many notices a slow subscriber may have pending
// before it starts losing them.
const localBusBuffer = 16

// Publish hands a copy of msg to every subscriber of channel that has room.
func (b *LocalBus) Publish(ctx context.Context, channel string, msg []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for ch := range b.subs[channel] {
		select {
		case ch <- append([]byte(nil), msg...):
		default:
		}
	}
	return nil
}

// Subscribe registers a subscriber until ctx ends.
func (b *LocalBus) Subscribe(ctx context.Context, channel string) (<-chan []byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ch := make(chan []byte, localBusBuffer)
	b.mu.Lock()
	if b.subs == nil {
		b.subs = map[string]map[chan []byte]struct{}{}
	}
	if b.subs[channel] == nil {
		b.subs[channel] = map[chan []byte]struct{}{}
	}
	b.subs[channel][ch] = struct{}{}
	b.mu.Unlock()
	go func() {
		<-ctx.Done()
		b.mu.Lock()
		delete(b.subs[channel], ch)
		if len(b.subs[channel]) == 0 {
			delete(b.subs, channel)
		}
		b.mu.Unlock()
		close(ch)
	}()
	return ch, nil
}
