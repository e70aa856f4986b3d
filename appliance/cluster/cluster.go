// Package cluster lets several appliance instances that share one store
// and bus (Redis) act as one for the WeChat callback: a Registry says which
// instances are alive, and a Relay hands a push that lands on one instance
// to a backend subscribed over RPC to another, exactly once, and brings its
// reply back within the callback's deadline.
//
// # The relay's protocol
//
// Every instance with subscribers advertises the union of their filters
// in one store record (advertKey), refreshed every few seconds, each entry
// with its own expiry so that a crashed instance's entry dies by itself.
// An origin (the instance WeChat's push landed on) that has no matching
// subscriber of its own picks an advertising instance whose filter
// matches and publishes the message on that instance's request channel,
// with an attempt id and the deadline.
//
// The bus is best effort, so it only makes things fast; the store decides.
// The attempt has a key (attemptKey) that the target claims with
// PutIfAbsent before it delivers, and that the origin claims itself to
// withdraw the attempt when the target has not claimed it in time (a dead
// instance, a lost notice). Exactly one of them wins, so a message reaches
// at most one subscriber however the notices fare, and the origin tries the
// next instance only for an attempt it withdrew or one the target declined
// without delivering. The target publishes its answer on the origin's
// reply channel and also stores it in the attempt key, where the origin
// finds it if the notice is lost. Answers to attempts the origin no longer
// waits for are dropped.
//
// Every key is read and written on its own (no multi-key operation), so
// Redis Cluster can spread them.
package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"strings"
	"time"
)

// Store keys and bus channels. kv.Redis adds its own prefix to both.
const (
	instanceKeyPrefix = "cluster/inst/"    // + id: a live instance's heartbeat
	advertKey         = "cluster/subs"     // every instance's advertised filter
	attemptKeyPrefix  = "cluster/attempt/" // + attempt id: who took it, and its answer
	requestChannel    = "cluster/req/"     // + id: messages for the instance to deliver
	answerChannel     = "cluster/ans/"     // + id: answers for the instance that asked
	advertChannel     = "cluster/subs"     // "the advertisements changed, look again"
)

// maxIDLen bounds an instance id: it goes into keys, channels and every
// message's claim record.
const maxIDLen = 128

// NewID returns an id for this process: its host name, so that operators
// recognise it in logs and the store, and a random suffix, so that a
// restarted process is never taken for its predecessor.
func NewID() string {
	host, _ := os.Hostname()
	host = strings.Map(func(r rune) rune {
		if validIDRune(r) {
			return r
		}
		return '-'
	}, host)
	if len(host) > 64 {
		host = host[:64]
	}
	if host == "" {
		host = "wxappliance"
	}
	var b [6]byte
	rand.Read(b[:]) // never fails
	return host + "-" + hex.EncodeToString(b[:])
}

func validIDRune(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.'
}

func validateID(id string) error {
	if id == "" || len(id) > maxIDLen || strings.IndexFunc(id, func(r rune) bool { return !validIDRune(r) }) >= 0 {
		return fmt.Errorf("cluster: instance id %q must be 1 to %d letters, digits, '-', '_' or '.'", id, maxIDLen)
	}
	return nil
}

// errStopped is what a background loop returns when its context ended.
var errStopped = errors.New("cluster: stopped")

// sleep waits d or until ctx ends, whichever is first.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return errStopped
	}
}

// keepRunning runs fn until ctx ends, again after a panic (logged with its
// stack, a second later), so that a bug costs a log line and a pause, not
// the process or the loop.
func keepRunning(ctx context.Context, log *slog.Logger, name string, fn func(context.Context)) {
	for ctx.Err() == nil {
		if !recovered(log, name, func() { fn(ctx) }) {
			return
		}
		if sleep(ctx, time.Second) != nil {
			return
		}
	}
}

// recovered runs fn and reports whether it panicked.
func recovered(log *slog.Logger, name string, fn func()) (panicked bool) {
	defer func() {
		if p := recover(); p != nil {
			log.Error("cluster: panic", "task", name, "panic", p, "stack", string(debug.Stack()))
			panicked = true
		}
	}()
	fn()
	return false
}

// detached is a context for cleaning up after ctx ended: its values, a
// short deadline of its own.
func detached(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
}

// cleanupTimeout bounds the store and bus calls made on the way out.
const cleanupTimeout = 2 * time.Second
