package oauth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/100steps/wxappliance/kv"
)

// Errors of the login and session flow.
var (
	ErrNoSession         = errors.New("oauth: not logged in")
	ErrNeedUserInfoScope = errors.New("oauth: the login has snsapi_base scope, snsapi_userinfo is needed")
	ErrBadLoginState     = errors.New("oauth: login state unknown, expired, already used or started in another browser")
	ErrBadTicket         = errors.New("oauth: login ticket unknown, expired or already used")
	ErrNotSubscribed     = errors.New("oauth: the user does not follow the account")
	// ErrTooManyLogins means SessionConfig.MaxPendingLogins logins were
	// begun within LoginStateTTL: the store holds at most that many login
	// states, however many clients ask.
	ErrTooManyLogins = errors.New("oauth: too many logins under way")
)

// Lifetimes of the short-lived login records.
const (
	LoginStateTTL = 10 * time.Minute
	TicketTTL     = 5 * time.Minute
	// refreshEarly renews a user token this long before WeChat's expiry so a
	// request does not race it.
	refreshEarly = time.Minute
)

// kv key prefixes. Every secret (session id, nonce, ticket) is stored under
// its sha256, so the data directory or a backup of it holds nothing a
// browser could present.
const (
	sessionPrefix = "sess/"
	loginPrefix   = "login/"
	ticketPrefix  = "ticket/"
)

// Session is a logged-in browser, stored on the server. The browser holds
// only its random id.
type Session struct {
	OpenID          string    `json:"openid"`
	UnionID         string    `json:"unionid,omitempty"`
	Scope           string    `json:"scope"`
	AccessToken     string    `json:"access_token"`
	AccessExpiresAt time.Time `json:"access_expires_at"`
	RefreshToken    string    `json:"refresh_token"`
	CreatedAt       time.Time `json:"created_at"`
	// ExpiresAt is when the store drops the session (CreatedAt plus the
	// session TTL when it was written), so that a copy in memory never
	// outlives it. Zero in records of earlier versions.
	ExpiresAt time.Time `json:"expires_at,omitzero"`
}

// HasUserInfoScope reports whether the user agreed to share their profile.
// WeChat lists scopes separated by commas.
func (s Session) HasUserInfoScope() bool {
	for _, sc := range strings.Split(s.Scope, ",") {
		if strings.TrimSpace(sc) == ScopeUserInfo {
			return true
		}
	}
	return false
}

// LoginRequest is what /auth remembers for /auth/code.
type LoginRequest struct {
	ReturnURL string `json:"return_url"`
	Scope     string `json:"scope"`
	// Ticket asks for a one-time login ticket appended to the return URL.
	Ticket bool `json:"ticket,omitempty"`
}

type loginRecord struct {
	LoginRequest
	BindingHash string `json:"binding"`
}

// Login is what a redeemed ticket tells a backend.
type Login struct {
	OpenID  string `json:"openid"`
	UnionID string `json:"unionid,omitempty"`
	Scope   string `json:"scope"`
}

// SessionConfig configures Sessions.
type SessionConfig struct {
	TTL time.Duration // how long a login lasts
	// Bus carries notices of changed sessions between the instances
	// sharing the store, whose copies in memory then drop them (see Run).
	// Nil means no other process writes the store (Badger): copies are
	// kept until the sessions expire.
	Bus kv.Bus
	// MaxPendingLogins bounds the login states stored at once: logins begun
	// within LoginStateTTL. Zero means DefaultMaxPendingLogins.
	MaxPendingLogins int
	Now              func() time.Time
	Logger           *slog.Logger
}

// Sessions keeps logins, the login states between /auth and /auth/code, and
// one-time login tickets.
type Sessions struct {
	store   kv.Store
	bus     kv.Bus // nil: nobody else writes the store
	web     *Web
	ttl     time.Duration
	now     func() time.Time
	log     *slog.Logger
	pending loginWindow
	cache   sessionCache
}

// DefaultMaxPendingLogins is ten thousand logins per ten minutes: a campus
// event's worth, and at most about 25 MB of login states.
const DefaultMaxPendingLogins = 10000

// NewSessions returns Sessions stored in store, refreshing user tokens with web.
func NewSessions(store kv.Store, web *Web, cfg SessionConfig) *Sessions {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxPendingLogins <= 0 {
		cfg.MaxPendingLogins = DefaultMaxPendingLogins
	}
	s := &Sessions{store: store, bus: cfg.Bus, web: web, ttl: cfg.TTL, now: cfg.Now, log: cfg.Logger,
		pending: loginWindow{max: cfg.MaxPendingLogins}}
	if s.bus == nil {
		s.cache.keep = true
	} else {
		s.cache.maxAge = sharedMaxAge // and kept only while Run follows the bus
	}
	return s
}

// NewSecret returns a random id for a session, nonce, ticket or browser
// binding: 26 characters of [A-Z2-7], 130 bits, within WeChat's rule for
// state ([A-Za-z0-9], at most 128 bytes).
func NewSecret() string { return rand.Text() }

// ValidSecret reports whether s has the shape NewSecret produces, so that
// junk from a cookie or query never reaches the store.
func ValidSecret(s string) bool {
	if len(s) != 26 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('A' <= c && c <= 'Z' || '2' <= c && c <= '7') {
			return false
		}
	}
	return true
}

func hashKey(prefix, secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return prefix + hex.EncodeToString(sum[:])
}

// Create stores a new session for tok and returns its id. The id is always
// fresh: a session id a browser presents is never adopted.
func (s *Sessions) Create(ctx context.Context, tok UserToken) (string, error) {
	id := NewSecret()
	sess := Session{
		OpenID:          tok.OpenID,
		UnionID:         tok.UnionID,
		Scope:           tok.Scope,
		AccessToken:     tok.AccessToken,
		AccessExpiresAt: tok.ExpiresAt,
		RefreshToken:    tok.RefreshToken,
		CreatedAt:       s.now(),
	}
	if err := s.put(ctx, id, sess); err != nil {
		return "", err
	}
	return id, nil // a new id: no copy of it anywhere to drop
}

// Lookup returns the session with id, or ErrNoSession.
func (s *Sessions) Lookup(ctx context.Context, id string) (Session, error) {
	if !ValidSecret(id) {
		return Session{}, ErrNoSession
	}
	h := sessionHash(id)
	now := s.now()
	if sess, ok := s.cache.get(h, now); ok {
		return sess, nil
	}
	epoch := s.cache.begin()
	data, err := s.store.Get(ctx, sessionPrefix+h)
	if errors.Is(err, kv.ErrNotFound) {
		return Session{}, ErrNoSession
	}
	if err != nil {
		return Session{}, fmt.Errorf("load session: %w", err)
	}
	var sess Session
	if err := json.Unmarshal(data, &sess); err != nil || sess.OpenID == "" {
		return Session{}, fmt.Errorf("%w: unreadable session record", ErrNoSession)
	}
	s.cache.put(h, sess, epoch, now)
	return sess, nil
}

// Revoke ends the session with id and reports whether there was one. A
// session that does not exist costs a read and no write, so anyone may ask.
func (s *Sessions) Revoke(ctx context.Context, id string) (bool, error) {
	if _, err := s.Lookup(ctx, id); errors.Is(err, ErrNoSession) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	if err := s.Delete(ctx, id); err != nil {
		return false, fmt.Errorf("end session: %w", err)
	}
	return true, nil
}

// Delete ends the session with id; ending a missing one is not an error.
func (s *Sessions) Delete(ctx context.Context, id string) error {
	if !ValidSecret(id) {
		return nil
	}
	h := sessionHash(id)
	if err := s.store.Delete(ctx, sessionPrefix+h); err != nil {
		return err
	}
	s.changed(ctx, h)
	return nil
}

// UserInfo is sns/userinfo for the session's user. The user token is renewed
// with the refresh_token when it has expired by our clock, or when WeChat
// rejects it, once. When the refresh_token is refused the session is ended
// and ErrNoSession returned: the user must log in again.
func (s *Sessions) UserInfo(ctx context.Context, id string) (json.RawMessage, error) {
	sess, err := s.Lookup(ctx, id)
	if err != nil {
		return nil, err
	}
	if !sess.HasUserInfoScope() {
		return nil, ErrNeedUserInfoScope
	}
	if !s.now().Before(sess.AccessExpiresAt.Add(-refreshEarly)) {
		if sess, err = s.refresh(ctx, id, sess); err != nil {
			return nil, err
		}
	}
	info, err := s.web.UserInfo(ctx, sess.AccessToken, sess.OpenID)
	if IsTokenRejected(err) {
		if sess, err = s.refresh(ctx, id, sess); err != nil {
			return nil, err
		}
		info, err = s.web.UserInfo(ctx, sess.AccessToken, sess.OpenID)
	}
	if HasCode(err, CodeScopeUnauthorize) {
		return nil, fmt.Errorf("%w: %w", ErrNeedUserInfoScope, err)
	}
	return info, err
}

func (s *Sessions) refresh(ctx context.Context, id string, sess Session) (Session, error) {
	tok, err := s.web.Refresh(ctx, sess.RefreshToken)
	var apiErr *APIError
	if errors.As(err, &apiErr) {
		// WeChat refused the refresh_token (40030 invalid, 42002 expired,
		// ...): nothing but a new login helps.
		s.log.Info("refresh_token refused, ending the session", "errcode", apiErr.Code)
		if derr := s.Delete(ctx, id); derr != nil {
			s.log.Warn("could not delete session", "err", derr)
		}
		return Session{}, fmt.Errorf("%w: %w", ErrNoSession, err)
	}
	if err != nil {
		return Session{}, err
	}
	sess.AccessToken = tok.AccessToken
	sess.AccessExpiresAt = tok.ExpiresAt
	if tok.RefreshToken != "" {
		sess.RefreshToken = tok.RefreshToken
	}
	if tok.Scope != "" {
		sess.Scope = tok.Scope
	}
	if err := s.put(ctx, id, sess); err != nil {
		return Session{}, err
	}
	s.changed(ctx, sessionHash(id))
	return sess, nil
}

// put stores sess until CreatedAt + TTL: refreshing a token does not extend
// the login. A session that copies may hold must be dropped afterwards
// (changed).
func (s *Sessions) put(ctx context.Context, id string, sess Session) error {
	sess.ExpiresAt = sess.CreatedAt.Add(s.ttl)
	ttl := sess.ExpiresAt.Sub(s.now())
	if ttl <= 0 {
		return ErrNoSession
	}
	data, err := json.Marshal(sess)
	if err != nil {
		return err
	}
	if err := s.store.Put(ctx, sessionPrefix+sessionHash(id), data, ttl); err != nil {
		return fmt.Errorf("store session: %w", err)
	}
	return nil
}

// BeginLogin remembers req for LoginStateTTL under a new nonce, which is
// sent to WeChat as state. binding is the browser's binding cookie: the
// nonce can only be finished by the browser that started it, so nobody can
// log a victim into the attacker's account with a crafted callback link.
func (s *Sessions) BeginLogin(ctx context.Context, binding string, req LoginRequest) (string, error) {
	if !ValidSecret(binding) {
		return "", errors.New("oauth: bad browser binding")
	}
	if !s.pending.add(s.now()) {
		return "", ErrTooManyLogins
	}
	nonce := NewSecret()
	data, err := json.Marshal(loginRecord{LoginRequest: req, BindingHash: hashKey("", binding)})
	if err != nil {
		return "", err
	}
	if err := s.store.Put(ctx, hashKey(loginPrefix, nonce), data, LoginStateTTL); err != nil {
		return "", fmt.Errorf("store login state: %w", err)
	}
	return nonce, nil
}

// FinishLogin consumes the login state of nonce if binding is the browser
// that started it. A nonce presented by another browser is left untouched
// for its owner.
func (s *Sessions) FinishLogin(ctx context.Context, nonce, binding string) (LoginRequest, error) {
	if !ValidSecret(nonce) || !ValidSecret(binding) {
		return LoginRequest{}, ErrBadLoginState
	}
	key := hashKey(loginPrefix, nonce)
	data, err := s.store.Get(ctx, key)
	if errors.Is(err, kv.ErrNotFound) {
		return LoginRequest{}, ErrBadLoginState
	}
	if err != nil {
		return LoginRequest{}, fmt.Errorf("load login state: %w", err)
	}
	var rec loginRecord
	if err := json.Unmarshal(data, &rec); err != nil {
		return LoginRequest{}, fmt.Errorf("%w: unreadable record", ErrBadLoginState)
	}
	if subtle.ConstantTimeCompare([]byte(rec.BindingHash), []byte(hashKey("", binding))) != 1 {
		return LoginRequest{}, fmt.Errorf("%w: started in another browser", ErrBadLoginState)
	}
	// Take decides between two racing finishes of the same nonce.
	if _, err := s.store.Take(ctx, key); errors.Is(err, kv.ErrNotFound) {
		return LoginRequest{}, ErrBadLoginState
	} else if err != nil {
		return LoginRequest{}, fmt.Errorf("consume login state: %w", err)
	}
	return rec.LoginRequest, nil
}

// Completion is what a finished login tells the browser: where to go,
// and the session (and ticket) it now holds.
type Completion struct {
	ReturnURL string
	SessionID string // empty when the user refused to authorize
	Ticket    string // set when the login asked for one
	// Snapshot is a visitor in WeChat's snapshot mode: no session was
	// created, the page should ask the user to open the full page.
	Snapshot bool
}

// CompleteLogin finishes the login the browser holding binding started
// under nonce: it consumes the login state, exchanges code once, creates a
// fresh session and ends previous (the session the browser brought along,
// which is never adopted), and issues a ticket when the login asked for
// one. An empty code means the user refused: the browser returns still
// logged out. A visitor in snapshot mode gets no session either.
func (s *Sessions) CompleteLogin(ctx context.Context, nonce, binding, code, previous string) (Completion, error) {
	req, err := s.FinishLogin(ctx, nonce, binding)
	if err != nil || code == "" {
		return Completion{ReturnURL: req.ReturnURL}, err
	}
	tok, err := s.web.Exchange(ctx, code)
	if err != nil {
		return Completion{}, err
	}
	if tok.Snapshot {
		// A virtual openid no API accepts: nothing is stored for it, and
		// the browser keeps whatever session it had.
		return Completion{ReturnURL: req.ReturnURL, Snapshot: true}, nil
	}
	id, err := s.Create(ctx, tok)
	if err != nil {
		return Completion{}, err
	}
	if err := s.Delete(ctx, previous); err != nil {
		s.log.Warn("could not end the previous session", "err", err)
	}
	done := Completion{ReturnURL: req.ReturnURL, SessionID: id}
	if req.Ticket {
		sess := Session{OpenID: tok.OpenID, UnionID: tok.UnionID, Scope: tok.Scope}
		if done.Ticket, err = s.IssueTicket(ctx, sess); err != nil {
			return Completion{}, err
		}
	}
	return done, nil
}

// IssueTicket returns a one-time ticket, valid for TicketTTL, that a
// backend redeems for the session's openid.
func (s *Sessions) IssueTicket(ctx context.Context, sess Session) (string, error) {
	ticket := NewSecret()
	data, err := json.Marshal(Login{OpenID: sess.OpenID, UnionID: sess.UnionID, Scope: sess.Scope})
	if err != nil {
		return "", err
	}
	if err := s.store.Put(ctx, hashKey(ticketPrefix, ticket), data, TicketTTL); err != nil {
		return "", fmt.Errorf("store ticket: %w", err)
	}
	return ticket, nil
}

// RedeemTicket consumes ticket: of any number of callers, one gets the login.
func (s *Sessions) RedeemTicket(ctx context.Context, ticket string) (Login, error) {
	if !ValidSecret(ticket) {
		return Login{}, ErrBadTicket
	}
	data, err := s.store.Take(ctx, hashKey(ticketPrefix, ticket))
	if errors.Is(err, kv.ErrNotFound) {
		return Login{}, ErrBadTicket
	}
	if err != nil {
		return Login{}, fmt.Errorf("redeem ticket: %w", err)
	}
	var l Login
	if err := json.Unmarshal(data, &l); err != nil {
		return Login{}, fmt.Errorf("%w: unreadable record", ErrBadTicket)
	}
	return l, nil
}

// loginWindow counts the logins begun in the last LoginStateTTL, in
// one-minute buckets, which bounds the login states stored at once. It
// counts per process: with several instances on one Redis, each has its own
// bound.
type loginWindow struct {
	max     int
	mu      sync.Mutex
	buckets [loginWindowBuckets]struct {
		minute int64
		n      int
	}
}

// One more bucket than LoginStateTTL has minutes: a state begun early in
// the oldest minute may still be stored late in the current one.
const loginWindowBuckets = int(LoginStateTTL/time.Minute) + 1

// add counts one login begun at now, unless max are already counted.
func (w *loginWindow) add(now time.Time) bool {
	minute := now.Unix() / 60
	w.mu.Lock()
	defer w.mu.Unlock()
	total := 0
	for i := range w.buckets {
		if minute-w.buckets[i].minute < int64(loginWindowBuckets) {
			total += w.buckets[i].n
		}
	}
	if total >= w.max {
		return false
	}
	b := &w.buckets[minute%int64(loginWindowBuckets)]
	if b.minute != minute {
		b.minute, b.n = minute, 0
	}
	b.n++
	return true
}
