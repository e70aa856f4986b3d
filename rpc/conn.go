package rpc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sourcegraph/jsonrpc2"
)

// closeGrace is how long a closing connection waits for the backend to
// answer the close frame before the TCP connection is cut.
const closeGrace = time.Second

// conn is one backend connection.
type conn struct {
	srv    *Server
	name   string // the key's name, for logs
	remote string
	since  time.Time
	ws     *websocket.Conn
	st     *stream
	jc     *jsonrpc2.Conn
	log    *slog.Logger
	queue  chan job // never full: Handle admits at most its capacity

	mu       sync.Mutex
	closing  bool // no new requests; guards handlers.Add against Wait
	queued   int  // requests admitted and not finished
	workers  int  // worker goroutines started
	idle     int  // workers waiting for a request not yet spoken for
	waiting  int  // requests in queue that no idle worker was reserved for
	handlers sync.WaitGroup
	working  sync.WaitGroup // the worker goroutines
}

// job is one admitted request.
type job struct {
	method string
	in     inbound
}

func newConn(s *Server, ws *websocket.Conn, name, remote string) *conn {
	log := s.log.With("rpc_key", name, "remote", remote)
	return &conn{
		srv:    s,
		name:   name,
		remote: remote,
		since:  time.Now(),
		ws:     ws,
		st:     newStream(ws, log, s.opts.WriteTimeout, 2*s.opts.PingInterval),
		log:    log,
		queue:  make(chan job, s.opts.MaxInFlight+s.opts.MaxQueued),
	}
}

// serve runs the connection until it ends. The HTTP handler must not
// return before: the request's context ends when it does.
func (c *conn) serve() {
	c.ws.SetPongHandler(func(string) error {
		c.ws.SetReadDeadline(time.Now().Add(c.st.readWait))
		return nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	c.jc = jsonrpc2.NewConn(ctx, c.st, c, jsonrpc2.SetLogger(printfLogger{c.log}))
	if c.srv.register(c) {
		c.log.Info("rpc connected")
	} else {
		c.stop(ctx) // the server began closing during the handshake
	}
	pinged := make(chan struct{})
	go func() {
		defer close(pinged)
		c.ping(ctx)
	}()

	<-c.jc.DisconnectNotify()
	cancel()
	c.srv.forget(c)
	c.mu.Lock()
	c.closing = true
	c.mu.Unlock()
	c.working.Wait()
	// Requests still queued have nobody to answer to.
	for len(c.queue) > 0 {
		<-c.queue
		c.handlers.Done()
	}
	c.handlers.Wait()
	<-pinged
	c.log.Info("rpc disconnected", "dur", time.Since(c.since).Round(time.Millisecond))
}

// ping keeps the connection alive through proxies and finds dead peers:
// the pong extends the read deadline. WriteControl may run beside the
// stream's writer.
func (c *conn) ping(ctx context.Context) {
	t := time.NewTicker(c.srv.opts.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(c.srv.opts.WriteTimeout)); err != nil {
				c.log.Debug("rpc ping failed, closing", "err", err)
				c.jc.Close()
				return
			}
		}
	}
}

// stop ends the connection for a shutdown: requests arriving now are
// refused, those in flight get until ctx ends, then the backend is told
// the server is going away (1001) and the connection is closed.
func (c *conn) stop(ctx context.Context) {
	c.mu.Lock()
	c.closing = true
	c.mu.Unlock()
	drained := make(chan struct{})
	go func() {
		c.handlers.Wait()
		close(drained)
	}()
	select {
	case <-drained:
	case <-ctx.Done():
	case <-c.jc.DisconnectNotify():
	}
	msg := websocket.FormatCloseMessage(websocket.CloseGoingAway, "server shutting down")
	if err := c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(closeGrace)); err == nil {
		// The backend echoes the close frame; its arrival ends the reader.
		select {
		case <-c.jc.DisconnectNotify():
		case <-time.After(closeGrace):
		}
	}
	c.jc.Close()
}

// Handle implements jsonrpc2.Handler. It runs on the connection's reader
// goroutine, so it only admits the request: at most MaxInFlight run at
// once on worker goroutines, MaxQueued more wait for one, and beyond that
// the request is answered CodeBusy straight away. The reader never blocks,
// so pongs and answers to callback.message keep flowing however busy the
// connection is. Workers are started as concurrency requires and kept
// until the connection ends: a goroutine per request would grow a fresh
// stack for every one.
func (c *conn) Handle(ctx context.Context, _ *jsonrpc2.Conn, req *jsonrpc2.Request) {
	in, ok := c.st.take(req.ID.Num)
	if !ok {
		return
	}
	c.mu.Lock()
	switch {
	case c.closing:
		c.mu.Unlock()
		c.observeCall(req.Method, errClosing, 0)
		c.answer(ctx, req.Method, in.id, errClosing, 0)
		return
	case c.queued >= cap(c.queue):
		c.mu.Unlock()
		c.observeCall(req.Method, errBusy, 0)
		c.answer(ctx, req.Method, in.id, errBusy, 0)
		return
	}
	c.queued++
	c.handlers.Add(1)
	spawn := false
	switch {
	case c.idle > 0:
		c.idle-- // that worker takes it
	case c.workers < c.srv.opts.MaxInFlight:
		c.workers++
		c.working.Add(1)
		spawn = true
	default:
		c.waiting++ // the next worker to finish takes it
	}
	c.mu.Unlock()
	c.queue <- job{method: req.Method, in: in}
	if spawn {
		go c.work(ctx)
	}
}

// work runs requests from the queue until the connection ends.
func (c *conn) work(ctx context.Context) {
	defer c.working.Done()
	for {
		select {
		case j := <-c.queue:
			c.run(ctx, j)
		case <-ctx.Done():
			return
		}
		c.mu.Lock()
		if c.waiting > 0 {
			c.waiting--
		} else {
			c.idle++
		}
		c.mu.Unlock()
	}
}

func (c *conn) run(ctx context.Context, j job) {
	defer c.handlers.Done()
	defer func() {
		c.mu.Lock()
		c.queued--
		c.mu.Unlock()
	}()
	if ctx.Err() != nil {
		return // the connection is gone; nobody to answer
	}
	start := time.Now()
	result, err := c.invoke(ctx, j.method, j.in.params)
	if ctx.Err() == nil {
		c.observeCall(j.method, err, time.Since(start))
	}
	if err != nil {
		c.answer(ctx, j.method, j.in.id, err, time.Since(start))
		return
	}
	if err := c.st.respond(j.in.id, result, nil); err != nil {
		c.log.Warn("rpc answer not sent", "method", j.method, "err", err)
		return
	}
	c.log.Debug("rpc call", "method", j.method, "dur", time.Since(start))
}

// invoke runs one method with its deadline, turning a panic into an
// internal error so one bad request cannot take the process down.
func (c *conn) invoke(ctx context.Context, name string, params json.RawMessage) (result any, err error) {
	m, ok := c.srv.methods[name]
	if !ok {
		return nil, errMethodNotFound
	}
	ctx, cancel := context.WithTimeout(ctx, m.timeout)
	defer cancel()
	defer func() {
		if p := recover(); p != nil {
			c.log.Error("rpc method panicked", "method", name, "panic", p, "stack", string(debug.Stack()))
			result, err = nil, fmt.Errorf("%w: %v", errPanic, p)
		}
	}()
	return m.fn(ctx, c, params)
}

// answer sends err as an error object and logs what the backend does not
// see. connCtx is the connection's context.
func (c *conn) answer(connCtx context.Context, method string, id json.RawMessage, err error, dur time.Duration) {
	if errors.Is(err, context.Canceled) && connCtx.Err() != nil {
		return // the backend left; nobody reads the answer
	}
	e, level := toWire(err)
	c.log.Log(context.Background(), level, "rpc call failed", "method", method, "code", e.Code, "dur", dur, "err", err)
	if werr := c.st.respond(id, nil, e); werr != nil {
		c.log.Debug("rpc error answer not sent", "method", method, "err", werr)
	}
}

// printfLogger routes jsonrpc2's own log lines (protocol errors as a
// connection ends) to slog at debug level.
type printfLogger struct{ log *slog.Logger }

func (p printfLogger) Printf(format string, args ...any) {
	p.log.Debug(fmt.Sprintf(format, args...))
}
