package rpc

import (
	"slices"
	"strings"
	"time"

	"github.com/100steps/wxappliance/appliance/wire"
)

// What an operator learns of the RPC server: the Observe hooks of Options
// and a snapshot of the connections.

// Connection is one connected backend, as an operator sees it.
type Connection struct {
	Key    string // the name of the key it authenticated with
	Remote string // its address as this server saw it
	Since  time.Time
	// Subscribed is true once it called callback.subscribe.
	Subscribed bool
}

// Connections returns the connected backends, oldest first.
func (s *Server) Connections() []Connection {
	s.mu.Lock()
	out := make([]Connection, 0, len(s.conns))
	byConn := make(map[*conn]int, len(s.conns))
	for c := range s.conns {
		byConn[c] = len(out)
		out = append(out, Connection{Key: c.name, Remote: c.remote, Since: c.since})
	}
	s.mu.Unlock()
	s.subs.mu.Lock()
	for _, sub := range s.subs.list {
		if i, ok := byConn[sub.c]; ok {
			out[i].Subscribed = true
		}
	}
	s.subs.mu.Unlock()
	slices.SortFunc(out, func(a, b Connection) int {
		if c := a.Since.Compare(b.Since); c != 0 {
			return c
		}
		return strings.Compare(a.Key, b.Key)
	})
	return out
}

// observeCall tells Options.ObserveCall how a request ended.
func (c *conn) observeCall(method string, err error, d time.Duration) {
	observe := c.srv.opts.ObserveCall
	if observe == nil {
		return
	}
	if _, ok := c.srv.methods[method]; !ok {
		method = "unknown" // backends choose the name: keep labels bounded
	}
	observe(method, callCode(err), d)
}

// callCode is the JSON-RPC code err is answered with, 0 for none.
func callCode(err error) int64 {
	if err == nil {
		return 0
	}
	kind, _ := wire.Classify(err)
	return codes[kind].code
}
