// Package rpc serves JSON-RPC 2.0 over WebSocket for backends: one
// long-lived, authenticated connection per backend that asks for a user's
// openid from a session or login ticket, user info, media, JS-SDK configs
// and the app access_token, calls allowlisted WeChat APIs, and receives the
// callback's messages to answer them. It is a transport over the oauth,
// jssdk and media services, like the browser routes, with its own table
// from service errors to the wire (errors.go). The protocol is documented
// in docs/rpc.md.
package rpc

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/100steps/wxappliance/jssdk"
	"github.com/100steps/wxappliance/media"
	"github.com/100steps/wxappliance/oauth"
)

// Sessions is what the rpc server needs of oauth.Sessions.
type Sessions interface {
	Lookup(ctx context.Context, id string) (oauth.Session, error)
	UserInfo(ctx context.Context, id string) (json.RawMessage, error)
	RedeemTicket(ctx context.Context, ticket string) (oauth.Login, error)
	Revoke(ctx context.Context, id string) (bool, error)
}

// App is what the rpc server needs of oauth.App.
type App interface {
	Token(ctx context.Context) (oauth.Token, error)
	InvalidateToken(ctx context.Context, stale string) (oauth.Token, error)
	UserInfo(ctx context.Context, openid string) (json.RawMessage, error)
	CallJSON(ctx context.Context, req oauth.Request, out any) error
}

// JSSDK is what the rpc server needs of jssdk.Service.
type JSSDK interface {
	Config(ctx context.Context, pageURL string) (jssdk.Config, error)
}

// Media is what the rpc server needs of media.Service.
type Media interface {
	Stream(ctx context.Context, id string, open func(media.Head) (io.Writer, error)) error
	MaxBytes() int64
}

// Services are the services the methods call.
type Services struct {
	Sessions Sessions
	App      App
	JSSDK    JSSDK
	Media    Media
}

// Key is one backend allowed to connect. Name appears in logs; Key never
// does.
type Key struct {
	Name string
	Key  string
}

// Options configures a Server. Zero values mean the defaults.
type Options struct {
	Keys []Key
	// AllowedOrigins are the only Origin headers a handshake may carry
	// (backends send none). Any other is refused, so a page on another
	// site cannot ride a browser into the API (cross-site WebSocket
	// hijacking).
	AllowedOrigins []string
	// CallTimeout bounds each method but media.get (default 10 s); the
	// appliance passes wechat.timeout, like the browser routes.
	CallTimeout time.Duration
	// MediaTimeout bounds media.get (default 30 s).
	MediaTimeout time.Duration
	// MediaBudget is how many bytes of media.get answers every connection
	// together holds in memory at once (default DefaultMediaBudget); see
	// mediaGet.
	MediaBudget int64
	// ReadLimit is the largest message a backend may send (default 1 MiB);
	// a bigger one closes the connection with status 1009.
	ReadLimit int64
	// PingInterval is how often the server pings (default 30 s). A
	// connection silent for two intervals, pongs included, is closed.
	PingInterval time.Duration
	// WriteTimeout bounds writing one message (default 10 s).
	WriteTimeout time.Duration
	// MaxInFlight is how many requests of one connection run at once
	// (default 32); MaxQueued more wait for a slot (default 256; negative
	// for none), and beyond that a request is answered CodeBusy at once.
	// The reader never waits for a slot, so pings, pongs and answers to
	// callback.message keep flowing on a busy connection.
	MaxInFlight int
	MaxQueued   int
	// WeChatPaths is the wechat.call allowlist (default
	// DefaultWeChatPaths).
	WeChatPaths []string
	Logger      *slog.Logger
	// ObserveConn, when set, is told when a backend connects (true) and
	// when it leaves (false), by its key's name.
	ObserveConn func(key string, connected bool)
	// ObserveCall, when set, is told of every request answered: the method
	// ("unknown" for a name the server does not have), the JSON-RPC error
	// code (0 for a result) and how long it ran.
	ObserveCall func(method string, code int64, d time.Duration)
}

func (o *Options) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.CallTimeout, 10*time.Second)
	def(&o.MediaTimeout, 30*time.Second)
	def(&o.PingInterval, 30*time.Second)
	def(&o.WriteTimeout, 10*time.Second)
	if o.MediaBudget <= 0 {
		o.MediaBudget = DefaultMediaBudget
	}
	if o.ReadLimit <= 0 {
		o.ReadLimit = 1 << 20
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = 32
	}
	if o.MaxQueued < 0 {
		o.MaxQueued = 0
	} else if o.MaxQueued == 0 {
		o.MaxQueued = 256
	}
	if o.WeChatPaths == nil {
		o.WeChatPaths = DefaultWeChatPaths
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Server is the RPC endpoint, an http.Handler. It tracks every connection
// it upgrades: http.Server.Shutdown does not see hijacked connections, so
// Shutdown and Close here end them.
type Server struct {
	svc      Services
	opts     Options
	log      *slog.Logger
	keys     []hashedKey
	origins  map[string]bool
	upgrader websocket.Upgrader
	methods  map[string]method
	allow    allowlist
	subs     subscribers
	// mediaBudget bounds the media.get answers held by every connection.
	mediaBudget *media.Budget

	mu     sync.Mutex
	closed bool
	conns  map[*conn]struct{}
	wg     sync.WaitGroup // connections past authentication
}

// New returns a Server over svc.
func New(svc Services, opts Options) (*Server, error) {
	if svc.Sessions == nil || svc.App == nil || svc.JSSDK == nil || svc.Media == nil {
		return nil, errors.New("rpc: every service is required")
	}
	opts.setDefaults()
	allow, err := newAllowlist(opts.WeChatPaths)
	if err != nil {
		return nil, err
	}
	s := &Server{
		svc:     svc,
		opts:    opts,
		log:     opts.Logger,
		keys:    hashKeys(opts.Keys),
		origins: make(map[string]bool),
		allow:   allow,
		conns:   make(map[*conn]struct{}),

		mediaBudget: media.NewBudget(opts.MediaBudget),
	}
	for _, o := range opts.AllowedOrigins {
		s.origins[o] = true
	}
	s.upgrader = websocket.Upgrader{
		HandshakeTimeout: opts.WriteTimeout,
		CheckOrigin:      s.originAllowed,
		Error: func(w http.ResponseWriter, r *http.Request, status int, reason error) {
			s.log.Info("rpc handshake failed", "remote", r.RemoteAddr, "status", status, "err", reason)
			writeEnvelope(w, status, "需要WebSocket握手（GET，Upgrade: websocket）")
		},
	}
	s.methods = s.methodTable()
	return s, nil
}

// ServeHTTP authenticates the handshake, upgrades it and serves the
// connection until it ends. Refusals happen before the upgrade, as plain
// HTTP answers in the browser routes' envelope.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !s.originAllowed(r) {
		s.log.Warn("rpc handshake refused: origin not allowed", "origin", r.Header.Get("Origin"), "remote", r.RemoteAddr)
		writeEnvelope(w, http.StatusForbidden, "跨域来源不在允许列表中（后端连接请勿发送Origin头）")
		return
	}
	name, ok := s.authenticate(r)
	if !ok {
		s.log.Warn("rpc handshake refused: missing or wrong key", "remote", r.RemoteAddr)
		w.Header().Set("WWW-Authenticate", `Bearer realm="wxappliance-rpc"`)
		writeEnvelope(w, http.StatusUnauthorized, "RPC密钥缺失或无效（Authorization: Bearer <key>）")
		return
	}
	if !s.enter() {
		writeEnvelope(w, http.StatusServiceUnavailable, "服务器正在关闭")
		return
	}
	defer s.wg.Done()
	ws, err := s.upgrader.Upgrade(hijackable{w}, r, nil)
	if err != nil {
		return // the upgrader answered and logged
	}
	// http.Server's ReadTimeout and WriteTimeout left deadlines on the
	// hijacked connection that would cut a long-lived one. gorilla clears
	// them today; clearing them here keeps that true whatever it does
	// tomorrow. The stream then sets its own per read and per write.
	ws.NetConn().SetDeadline(time.Time{})
	ws.SetReadLimit(s.opts.ReadLimit)
	newConn(s, ws, name, r.RemoteAddr).serve()
}

// enter counts a connection in, unless the server is closing.
func (s *Server) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	return true
}

// register tracks c for Shutdown; false when the server closed meanwhile.
func (s *Server) register(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	if s.opts.ObserveConn != nil {
		s.opts.ObserveConn(c.name, true)
	}
	return true
}

func (s *Server) forget(c *conn) {
	s.mu.Lock()
	_, registered := s.conns[c]
	delete(s.conns, c)
	s.mu.Unlock()
	s.subs.remove(c)
	if registered && s.opts.ObserveConn != nil {
		s.opts.ObserveConn(c.name, false)
	}
}

// Shutdown refuses new connections, lets requests in flight finish until
// ctx ends, then closes every connection with status 1001 (going away) and
// waits for their goroutines. The Go client reconnects on its own.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.stop(ctx)
		}()
	}
	wg.Wait()
	s.wg.Wait()
	return nil
}

// Close is Shutdown without waiting for requests in flight: they are
// cancelled. It returns once no method runs any more, so the services (and
// the store under them) can be closed after it.
func (s *Server) Close() error {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return s.Shutdown(ctx)
}

// hijackable lets gorilla hijack through middleware that wraps the
// ResponseWriter: gorilla asserts http.Hijacker on w itself, while
// http.ResponseController follows Unwrap.
type hijackable struct{ http.ResponseWriter }

func (h hijackable) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return http.NewResponseController(h.ResponseWriter).Hijack()
}

// writeEnvelope answers a refused handshake like the browser routes do.
func writeEnvelope(w http.ResponseWriter, status int, msg string) {
	body, _ := marshal(struct {
		Status int    `json:"status"`
		Msg    string `json:"msg"`
		Data   any    `json:"data"`
	}{status, msg, nil})
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(append(body, '\n'))
}
