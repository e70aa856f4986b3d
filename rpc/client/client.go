// Package client is a Go client for the appliance's JSON-RPC API: one
// WebSocket connection, authenticated with a key, that reconnects with
// backoff when it drops, carries concurrent calls and receives
// callback.message requests for a subscription. docs/rpc.md describes the
// methods.
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sourcegraph/jsonrpc2"
)

// Options configures a Client. Zero values mean the defaults.
type Options struct {
	// Header is added to the handshake (the key goes in Authorization).
	Header http.Header
	// HandshakeTimeout bounds one connection attempt (default 10 s).
	HandshakeTimeout time.Duration
	// MinBackoff and MaxBackoff bound the pause between reconnection
	// attempts, which doubles from one to the other (default 100 ms, 30 s),
	// with jitter so many backends do not reconnect in step.
	MinBackoff, MaxBackoff time.Duration
	// PingInterval is how often the client pings (default 30 s); a
	// connection silent for two intervals is considered dead.
	PingInterval time.Duration
	// WriteTimeout bounds writing one message (default 10 s).
	WriteTimeout time.Duration
	// HandlerTimeout bounds one subscription handler call (default 10 s).
	// The appliance waits less (its callback must answer WeChat within
	// 5 s); an answer after that is dropped.
	HandlerTimeout time.Duration
	// ReadLimit is the largest message accepted (default 64 MiB: a
	// media.get answer is the file in base64).
	ReadLimit int64
	Logger    *slog.Logger
}

func (o *Options) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.HandshakeTimeout, 10*time.Second)
	def(&o.MinBackoff, 100*time.Millisecond)
	def(&o.MaxBackoff, 30*time.Second)
	def(&o.PingInterval, 30*time.Second)
	def(&o.WriteTimeout, 10*time.Second)
	def(&o.HandlerTimeout, 10*time.Second)
	if o.ReadLimit <= 0 {
		o.ReadLimit = 64 << 20
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Filter chooses the callback pushes a subscription receives; empty means
// all. See callback.subscribe in docs/rpc.md.
type Filter struct {
	MsgTypes []string `json:"msg_types,omitempty"`
	Events   []string `json:"events,omitempty"`
}

// Handler answers one callback push. msg is the message as JSON (decode it
// into callback.Message or a struct of your own). reply is the passive
// reply ({"type": "text", "content": ...}), nil for none; an error sends
// none either. ctx ends after Options.HandlerTimeout or when the
// connection drops.
type Handler func(ctx context.Context, msg json.RawMessage) (reply any, err error)

// maxHandlers bounds the handlers running at once on a connection.
const maxHandlers = 32

// Client is a connection to the appliance that survives disconnections.
// Its methods are safe for concurrent use.
type Client struct {
	url    string
	key    string
	opts   Options
	log    *slog.Logger
	dialer websocket.Dialer
	ctx    context.Context // ends on Close
	cancel context.CancelFunc

	mu     sync.Mutex
	cur    *session      // nil while reconnecting
	ready  chan struct{} // closed once cur is set
	sub    *subscription
	closed bool

	loopDone chan struct{}
}

type subscription struct {
	filter  Filter
	handler Handler
}

// session is one WebSocket connection.
type session struct {
	ws   *websocket.Conn
	jc   *jsonrpc2.Conn
	gone chan struct{} // closed once the loop has stopped using it
}

// Dial connects to the appliance at url (ws:// or wss://, e.g.
// "ws://127.0.0.1:8080/rpc") with key. The first connection must succeed:
// a refused handshake is a *HandshakeError (401 wrong key, 403 Origin not
// allowed). After that the Client reconnects by itself until Close.
func Dial(ctx context.Context, url, key string, opts *Options) (*Client, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	o.setDefaults()
	c := &Client{
		url:      url,
		key:      key,
		opts:     o,
		log:      o.Logger,
		dialer:   websocket.Dialer{HandshakeTimeout: o.HandshakeTimeout, Proxy: http.ProxyFromEnvironment},
		ready:    make(chan struct{}),
		loopDone: make(chan struct{}),
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	sess, err := c.connect(ctx)
	if err != nil {
		c.cancel()
		return nil, err
	}
	c.cur = sess
	close(c.ready)
	go c.loop(sess)
	return c, nil
}

// Call calls method with params (any JSON-encodable value; nil sends {})
// and decodes the result into result (nil discards it). While the client
// reconnects, Call waits for the connection until ctx ends. An error the
// appliance answered is an *Error; a call cut by a disconnection is
// ErrDisconnected (it is not retried: it may have run).
func (c *Client) Call(ctx context.Context, method string, params, result any) error {
	if params == nil {
		params = struct{}{}
	}
	// Encoded once here, so that a failure to send below can only be the
	// connection's.
	raw, err := json.Marshal(params)
	if err != nil {
		return fmt.Errorf("rpc client: params: %w", err)
	}
	var w jsonrpc2.Waiter
	for {
		sess, err := c.session(ctx)
		if err != nil {
			return err
		}
		w, err = sess.jc.DispatchCall(ctx, method, json.RawMessage(raw))
		if err == nil {
			break
		}
		// The request did not leave (a WebSocket message counts only once
		// whole), so it is safe to send on the next connection.
		sess.jc.Close()
	}
	err = w.Wait(ctx, result)
	var wire *jsonrpc2.Error
	switch {
	case errors.As(err, &wire):
		return fromWire(wire)
	case errors.Is(err, jsonrpc2.ErrClosed):
		if c.isClosed() {
			return ErrClosed
		}
		return ErrDisconnected
	}
	return err
}

// Subscribe asks for the callback pushes matching f and hands each to h,
// on this connection and again after every reconnection. A second
// Subscribe replaces the first. The error is the current connection's
// answer; the subscription is kept for reconnections even when that fails.
func (c *Client) Subscribe(ctx context.Context, f Filter, h Handler) error {
	c.mu.Lock()
	c.sub = &subscription{filter: f, handler: h}
	c.mu.Unlock()
	return c.Call(ctx, "callback.subscribe", f, nil)
}

// Close ends the connection (status 1000) and stops reconnecting.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	sess := c.cur
	c.mu.Unlock()
	c.cancel()
	if sess != nil {
		msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
		sess.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
		sess.jc.Close()
	}
	<-c.loopDone
	return nil
}

func (c *Client) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

func (c *Client) subscription() *subscription {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sub
}

// session returns the live connection, waiting for a reconnection.
func (c *Client) session(ctx context.Context) (*session, error) {
	for {
		c.mu.Lock()
		closed, cur, ready := c.closed, c.cur, c.ready
		c.mu.Unlock()
		switch {
		case closed:
			return nil, ErrClosed
		case cur != nil:
			select {
			case <-cur.jc.DisconnectNotify():
				// Dropped, and the loop has not taken it out yet.
				ready = cur.gone
			default:
				return cur, nil
			}
		}
		select {
		case <-ready:
		case <-c.ctx.Done():
			return nil, ErrClosed
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// loop watches the connection and replaces it when it drops, until Close.
func (c *Client) loop(sess *session) {
	defer close(c.loopDone)
	for {
		select {
		case <-sess.jc.DisconnectNotify():
		case <-c.ctx.Done():
			return
		}
		c.mu.Lock()
		c.cur = nil
		c.ready = make(chan struct{})
		c.mu.Unlock()
		close(sess.gone)
		if c.ctx.Err() != nil {
			return
		}
		c.log.Warn("rpc connection lost, reconnecting", "url", c.url)
		if sess = c.reconnect(); sess == nil {
			return
		}
	}
}

// reconnect dials until it succeeds or the client closes, with jittered
// exponential backoff.
func (c *Client) reconnect() *session {
	backoff := c.opts.MinBackoff
	for attempt := 1; ; attempt++ {
		sess, err := c.connect(c.ctx)
		if err == nil {
			c.mu.Lock()
			if c.closed {
				c.mu.Unlock()
				sess.jc.Close()
				return nil
			}
			c.cur = sess
			close(c.ready)
			c.mu.Unlock()
			c.log.Info("rpc reconnected", "url", c.url, "attempts", attempt)
			return sess
		}
		// Half to all of the backoff, so backends restarted together do not
		// reconnect together.
		pause := backoff/2 + rand.N(backoff/2+1)
		c.log.Warn("rpc reconnection failed", "url", c.url, "err", err, "retry_in", pause)
		select {
		case <-time.After(pause):
		case <-c.ctx.Done():
			return nil
		}
		backoff = min(2*backoff, c.opts.MaxBackoff)
	}
}

// connect dials one connection, and subscribes it when there is a
// subscription.
func (c *Client) connect(ctx context.Context) (*session, error) {
	hdr := c.opts.Header.Clone()
	if hdr == nil {
		hdr = http.Header{}
	}
	hdr.Set("Authorization", "Bearer "+c.key)
	ws, resp, err := c.dialer.DialContext(ctx, c.url, hdr)
	if err != nil {
		if resp != nil {
			return nil, handshakeError(resp)
		}
		return nil, fmt.Errorf("rpc client: dial: %w", err)
	}
	ws.SetReadLimit(c.opts.ReadLimit)
	st := newStream(ws, c.opts.WriteTimeout, 2*c.opts.PingInterval)
	sess := &session{ws: ws, gone: make(chan struct{})}
	sess.jc = jsonrpc2.NewConn(c.ctx, st, &handler{c: c, slots: make(chan struct{}, maxHandlers)},
		jsonrpc2.SetLogger(printfLogger{c.log}))
	go c.ping(sess)
	if sub := c.subscription(); sub != nil {
		if err := sess.jc.Call(ctx, "callback.subscribe", sub.filter, nil); err != nil {
			sess.jc.Close()
			var wire *jsonrpc2.Error
			if errors.As(err, &wire) {
				err = fromWire(wire)
			}
			return nil, fmt.Errorf("rpc client: subscribe: %w", err)
		}
	}
	return sess, nil
}

func handshakeError(resp *http.Response) error {
	defer resp.Body.Close()
	var env struct {
		Msg string `json:"msg"`
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	json.Unmarshal(body, &env)
	return &HandshakeError{StatusCode: resp.StatusCode, Msg: env.Msg}
}

// ping keeps the connection alive and finds a dead appliance: the stream
// extends its read deadline on every pong.
func (c *Client) ping(sess *session) {
	t := time.NewTicker(c.opts.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-sess.jc.DisconnectNotify():
			return
		case <-t.C:
			if err := sess.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(c.opts.WriteTimeout)); err != nil {
				sess.jc.Close()
				return
			}
		}
	}
}

// handler answers the appliance's requests: callback.message for the
// subscription. It runs on the reader goroutine, so each handler call gets
// a goroutine of its own, at most maxHandlers at once.
type handler struct {
	c     *Client
	slots chan struct{}
}

func (h *handler) Handle(ctx context.Context, jc *jsonrpc2.Conn, req *jsonrpc2.Request) {
	if req.Notif {
		return
	}
	sub := h.c.subscription()
	if req.Method != "callback.message" || sub == nil {
		jc.ReplyWithError(ctx, req.ID, &jsonrpc2.Error{Code: CodeMethodNotFound, Message: "method not found"})
		return
	}
	var msg json.RawMessage
	if req.Params != nil {
		msg = *req.Params
	}
	go func() {
		select {
		case h.slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		defer func() { <-h.slots }()
		reply, err := h.run(ctx, sub.handler, msg)
		if err != nil {
			h.c.log.Warn("rpc subscription handler failed", "err", err)
			jc.ReplyWithError(ctx, req.ID, &jsonrpc2.Error{Code: CodeInternalError, Message: "handler failed"})
			return
		}
		if err := jc.Reply(ctx, req.ID, struct {
			Reply any `json:"reply"`
		}{reply}); err != nil {
			h.c.log.Debug("rpc reply not sent", "err", err)
		}
	}()
}

// run calls the handler with its deadline, turning a panic into an error.
func (h *handler) run(ctx context.Context, fn Handler, msg json.RawMessage) (reply any, err error) {
	ctx, cancel := context.WithTimeout(ctx, h.c.opts.HandlerTimeout)
	defer cancel()
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("handler panicked: %v", p)
		}
	}()
	return fn(ctx, msg)
}

type printfLogger struct{ log *slog.Logger }

func (p printfLogger) Printf(format string, args ...any) {
	p.log.Debug(fmt.Sprintf(format, args...))
}
