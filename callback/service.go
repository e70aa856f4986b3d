package callback

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Defaults for Config.
const (
	// DefaultReplyTimeout leaves half a second of WeChat's five for the
	// network: after five seconds WeChat drops the answer and retries.
	DefaultReplyTimeout = 4500 * time.Millisecond
	// DefaultTimestampWindow is how far a request's timestamp may be from
	// the server's clock. WeChat's retries repeat the first try's query
	// string, so it must cover them (about 15 s) plus clock skew.
	DefaultTimestampWindow = 5 * time.Minute
)

// Config configures a Service.
type Config struct {
	// Token is the Token of WeChat's server configuration. Required.
	Token string
	// AppID is the account's AppID; decrypted messages must name it.
	AppID string
	// EncodingAESKey enables compatible and safe mode. Empty: plaintext
	// mode only.
	EncodingAESKey string
	// PreviousEncodingAESKey is the key before the last change: messages
	// that decrypt with it are answered with it.
	PreviousEncodingAESKey string
	// ReplyTimeout bounds the time from receiving a message to answering
	// it; zero means DefaultReplyTimeout.
	ReplyTimeout time.Duration
	// TimestampWindow is how far the timestamp parameter may be from Now;
	// zero means DefaultTimestampWindow.
	TimestampWindow time.Duration
	// Now is the clock for timestamps; nil means time.Now. Deadlines
	// always use the real clock.
	Now func() time.Time
	// Random feeds encryption prefixes and reply nonces; nil means
	// crypto/rand.
	Random io.Reader
	// Logger receives one line per message (type, event and ids only,
	// never contents) and problems; nil discards.
	Logger *slog.Logger
	// Instances tells which processes sharing the store are alive, so that
	// a message whose first delivery was being answered by a process that
	// crashed is dispatched again on WeChat's retry. Nil means only this
	// process is alive, right when no other process uses the store
	// (Badger); with several instances on one store (Redis) it must know
	// them all, or a retry reaching one instance would take over another's
	// claim and dispatch twice.
	Instances Instances
	// Observe, when set, is told how each POSTed push was answered, for
	// metrics; it runs on the request's goroutine. Nil means nobody listens.
	Observe func(Observation)
	// Late sends a subscriber's reply that came after ReplyTimeout, when
	// WeChat already has "success", as a customer service message (what
	// WeChat's own documentation advises). Nil drops late replies.
	Late LateSender
	// LateWindow is how long after ReplyTimeout a late reply is still
	// taken; zero means DefaultLateWindow.
	LateWindow time.Duration
}

// DefaultLateWindow is how long a late reply is waited for: WeChat lets an
// account message a user for 48 hours after their message, but a reply a
// minute late answers something they have stopped waiting for.
const DefaultLateWindow = time.Minute

// LateSender delivers a reply that missed the passive answer's deadline.
type LateSender interface {
	SendLate(ctx context.Context, msg *Message, reply *Reply) error
}

// Service answers WeChat's pushes. It is safe for concurrent use.
type Service struct {
	token      string
	crypters   []*Crypter // current key first, then the previous one
	dispatcher *Dispatcher
	store      Store
	instances  Instances
	// claimRecord is this process's dedupe claim, "p" + its instance id.
	claimRecord []byte

	replyTimeout time.Duration
	window       time.Duration
	dedupeTTL    time.Duration
	now          func() time.Time
	random       io.Reader
	log          *slog.Logger
	observer     func(Observation)
	late         LateSender
	lateWindow   time.Duration
}

// New returns a Service that dedupes in store and asks d for replies.
func New(store Store, d *Dispatcher, cfg Config) (*Service, error) {
	if cfg.Token == "" {
		return nil, errors.New("callback: token is required")
	}
	if store == nil || d == nil {
		return nil, errors.New("callback: store and dispatcher are required")
	}
	s := &Service{
		token:        cfg.Token,
		dispatcher:   d,
		store:        store,
		replyTimeout: cfg.ReplyTimeout,
		window:       cfg.TimestampWindow,
		now:          cfg.Now,
		random:       cfg.Random,
		log:          cfg.Logger,
		instances:    cfg.Instances,
		observer:     cfg.Observe,
		late:         cfg.Late,
		lateWindow:   cfg.LateWindow,
	}
	if s.lateWindow <= 0 {
		s.lateWindow = DefaultLateWindow
	}
	if s.instances == nil {
		s.instances = soleInstance(processInstance())
	}
	if s.instances.Self() == "" {
		return nil, errors.New("callback: Instances.Self is empty")
	}
	s.claimRecord = append([]byte{recordPending}, s.instances.Self()...)
	for _, key := range []string{cfg.EncodingAESKey, cfg.PreviousEncodingAESKey} {
		if key == "" {
			continue
		}
		c, err := NewCrypter(key, cfg.AppID)
		if err != nil {
			return nil, err
		}
		s.crypters = append(s.crypters, c)
	}
	if s.replyTimeout <= 0 {
		s.replyTimeout = DefaultReplyTimeout
	}
	if s.window <= 0 {
		s.window = DefaultTimestampWindow
	}
	// A replay is accepted while its timestamp is within the window, which
	// for a message first seen at the window's early edge is up to two
	// windows later; its record must outlive that. Never under a minute,
	// well past WeChat's retries.
	s.dedupeTTL = max(2*s.window+time.Minute, time.Minute)
	if s.now == nil {
		s.now = time.Now
	}
	if s.random == nil {
		s.random = rand.Reader
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	return s, nil
}

// SetSubscriber sets (or, with nil, removes) the RPC subscriber.
func (s *Service) SetSubscriber(sub Subscriber) { s.dispatcher.SetSubscriber(sub) }

// Verify answers WeChat's URL verification (a GET when the server
// configuration is saved): the echostr to send back, exactly as received,
// when the signature is right. The signature is over token, timestamp and
// nonce in every mode.
func (s *Service) Verify(q Query) (string, error) {
	if !CheckSignature(q.Signature, s.token, q.Timestamp, q.Nonce) {
		return "", ErrSignature
	}
	if err := s.checkTimestamp(q.Timestamp); err != nil {
		return "", err
	}
	if q.EchoStr == "" {
		return "", fmt.Errorf("%w: echostr is missing", ErrMalformed)
	}
	return q.EchoStr, nil
}

// Answer is the body to send for a message, with HTTP status 200.
type Answer struct {
	Body []byte
	// Duplicate is true when the body came from the dedupe store.
	Duplicate bool
}

// ContentType is the MIME type of the body.
func (a *Answer) ContentType() string {
	if bytes.HasPrefix(a.Body, []byte("<")) {
		return "text/xml; charset=utf-8"
	}
	return "text/plain; charset=utf-8"
}

// Mode names how a message arrived, for logs.
const (
	modePlaintext  = "plaintext"
	modeCompatible = "compatible"
	modeSafe       = "safe"
)

// inbound is a verified, decrypted and parsed message.
type inbound struct {
	msg     *Message
	mode    string
	crypter *Crypter // the key that decrypted it; nil in plaintext mode
	keyName string
}

// Handle answers a message or event (a POST). It returns an error for a
// request that is not a valid push (see the Err variables); for a valid
// one it always returns an answer within the reply timeout, "success" when
// there is no reply, the reply failed, or it was not ready in time. A retry
// or replay of a message gets the first answer again and is not dispatched,
// unless the process that was answering the first delivery died: then one
// retry dispatches it again.
func (s *Service) Handle(ctx context.Context, q Query, body []byte) (*Answer, error) {
	deadline := time.Now().Add(s.replyTimeout)
	in, err := s.open(q, body)
	if err != nil {
		s.observe(Observation{Outcome: OutcomeRefused, Err: err})
		return nil, err
	}
	msg := in.msg

	key := dedupeKey(msg)
	first, stored := s.claim(ctx, key)
	if !first {
		out, takenOver := s.stored(ctx, key, deadline)
		if !takenOver {
			s.logMessage(ctx, slog.LevelInfo, "callback duplicate answered from store", in)
			s.observe(Observation{MsgType: msg.MsgType, Event: msg.Event, Mode: in.mode, Outcome: OutcomeDuplicate})
			return &Answer{Body: out, Duplicate: true}, nil
		}
		s.logMessage(ctx, slog.LevelWarn, "callback retry took over the claim of a dead instance, dispatching again", in)
	}
	out, source, replyType, late := s.answer(ctx, in, deadline)
	if stored {
		// Stored even if WeChat has hung up: its retry gets this answer.
		s.remember(context.WithoutCancel(ctx), key, out)
	}
	s.logMessage(ctx, slog.LevelInfo, "callback message", in, slog.String("source", string(source)), slog.String("reply", replyType))
	if s.observer != nil {
		outcome := OutcomeReplied
		switch {
		case late:
			outcome = OutcomeLate
		case replyType == Success:
			outcome = OutcomeEmpty
		}
		s.observer(Observation{MsgType: msg.MsgType, Event: msg.Event, Mode: in.mode, Outcome: outcome})
	}
	return &Answer{Body: out}, nil
}

// logMessage logs one line about a message: its mode, type, event and
// ids, never its content. The attributes are only built when the line is
// written.
func (s *Service) logMessage(ctx context.Context, level slog.Level, text string, in *inbound, extra ...slog.Attr) {
	if !s.log.Enabled(ctx, level) {
		return
	}
	attrs := make([]slog.Attr, 0, 7+len(extra))
	attrs = append(attrs, slog.String("mode", in.mode), slog.String("msg_type", in.msg.MsgType),
		slog.String("event", in.msg.Event), slog.String("msg_id", in.msg.MsgID))
	if in.keyName != "" {
		attrs = append(attrs, slog.String("key", in.keyName))
	}
	s.log.LogAttrs(ctx, level, text, append(attrs, extra...)...)
}

// open verifies, decrypts and parses a push, checking first what costs
// nothing, so that an anonymous body is never parsed before a signature
// vouches for it: the plaintext signature covers no body at all, and
// msg_signature needs only the Encrypt value, which scanEnvelope finds
// without parsing.
//
// Encrypted means encrypt_type is aes, or msg_signature is present and
// the body mentions Encrypt (compatible mode sends plaintext fields and
// Encrypt; the plaintext fields are not covered by msg_signature, so only
// the decrypted message is used).
func (s *Service) open(q Query, body []byte) (*inbound, error) {
	if strings.EqualFold(q.EncryptType, "aes") || (q.MsgSignature != "" && bytes.Contains(body, []byte("Encrypt"))) {
		return s.openEncrypted(q, body)
	}
	return s.openPlaintext(q, body)
}

// openPlaintext checks the signature and the timestamp, then parses.
func (s *Service) openPlaintext(q Query, body []byte) (*inbound, error) {
	if !CheckSignature(q.Signature, s.token, q.Timestamp, q.Nonce) {
		return nil, ErrSignature
	}
	if err := s.checkTimestamp(q.Timestamp); err != nil {
		return nil, err
	}
	if len(s.crypters) > 0 {
		// Refused whatever it holds; the scan only tells the sender
		// which mistake it made, without the cost of a parse.
		env, err := scanEnvelope(body)
		switch {
		case err != nil:
			return nil, err
		case env.hasEncrypt:
			return nil, errNoMsgSignature
		}
		return nil, ErrPlaintext
	}
	fields, err := parseFields(body)
	if err != nil {
		return nil, err
	}
	if _, ok := fields["Encrypt"]; ok {
		return nil, errNoMsgSignature
	}
	msg, err := messageFromFields(fields)
	if err != nil {
		return nil, err
	}
	return &inbound{msg: msg, mode: modePlaintext}, nil
}

// errNoMsgSignature is the classic mistake of checking signature on an
// encrypted message: it does not cover the body.
var errNoMsgSignature = fmt.Errorf("%w: msg_signature is missing", ErrSignature)

// openEncrypted checks msg_signature over the Encrypt value and the
// timestamp, then decrypts and parses the message inside.
func (s *Service) openEncrypted(q Query, body []byte) (*inbound, error) {
	if q.MsgSignature == "" {
		return nil, errNoMsgSignature
	}
	env, err := scanEnvelope(body)
	if err != nil {
		return nil, err
	}
	if env.encrypt == "" {
		return nil, fmt.Errorf("%w: encrypted message without an Encrypt value", ErrMalformed)
	}
	if !CheckSignature(q.MsgSignature, s.token, q.Timestamp, q.Nonce, env.encrypt) {
		return nil, ErrSignature
	}
	if err := s.checkTimestamp(q.Timestamp); err != nil {
		return nil, err
	}
	if len(s.crypters) == 0 {
		return nil, ErrNoKey
	}
	plain, c, err := s.decrypt(env.encrypt)
	if err != nil {
		return nil, err
	}
	msg, err := ParseMessage(plain)
	if err != nil {
		return nil, fmt.Errorf("decrypted message: %w", err)
	}
	in := &inbound{msg: msg, mode: modeSafe, crypter: c}
	if env.compatible {
		in.mode = modeCompatible
	}
	if c != s.crypters[0] {
		in.keyName = "previous"
	}
	return in, nil
}

// decrypt tries the current key, then the previous one. A wrong key almost
// always fails the padding or length checks, and otherwise the AppID check.
func (s *Service) decrypt(encrypt string) ([]byte, *Crypter, error) {
	var errs []error
	for _, c := range s.crypters {
		plain, err := c.Decrypt(encrypt)
		if err == nil {
			return plain, c, nil
		}
		if errors.Is(err, ErrMalformed) { // base64: no key will do better
			return nil, nil, err
		}
		errs = append(errs, err)
	}
	for _, err := range errs {
		if errors.Is(err, ErrAppID) {
			return nil, nil, err
		}
	}
	return nil, nil, errs[0]
}

// checkTimestamp refuses a timestamp outside the window around now.
func (s *Service) checkTimestamp(ts string) error {
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: timestamp is not a number", ErrStale)
	}
	// Sub saturates instead of overflowing for absurd values.
	d := s.now().Sub(time.Unix(sec, 0))
	if d > s.window || d < -s.window {
		return fmt.Errorf("%w: %v from the server's clock", ErrStale, d.Round(time.Second))
	}
	return nil
}

// answer dispatches msg and renders the body to send: the reply XML,
// encrypted when the message was, or "success". The second result says
// where the reply came from and the third its type, for the log; late
// says the reply was not ready by the deadline.
func (s *Service) answer(ctx context.Context, in *inbound, deadline time.Time) (body []byte, source Source, replyType string, late bool) {
	reply, source, late := s.dispatch(ctx, in.msg, deadline)
	if reply == nil {
		return []byte(Success), source, Success, late
	}
	var buf bytes.Buffer
	buf.Grow(replySizeHint)
	renderReply(&buf, reply, in.msg, s.now().Unix())
	if in.crypter == nil {
		return buf.Bytes(), source, reply.Type, false
	}
	out, err := s.seal(in.crypter, buf.Bytes())
	if err != nil {
		s.log.Error("callback reply encryption failed", "err", err)
		return []byte(Success), source, Success, false
	}
	return out, source, reply.Type, false
}

// replySizeHint is room enough for a reply's XML around its content, or an
// envelope around its Encrypt value, so the buffer is allocated once.
const replySizeHint = 512

// seal encrypts a reply and wraps it in the envelope WeChat expects, with
// its own timestamp, nonce and signature.
func (s *Service) seal(c *Crypter, reply []byte) ([]byte, error) {
	encrypt, err := c.Encrypt(s.random, reply)
	if err != nil {
		return nil, err
	}
	nonce, err := s.nonce()
	if err != nil {
		return nil, err
	}
	ts := strconv.FormatInt(s.now().Unix(), 10)
	var buf bytes.Buffer
	buf.Grow(len(encrypt) + replySizeHint)
	renderEncrypted(&buf, encrypt, Signature(s.token, ts, nonce, encrypt), ts, nonce)
	return buf.Bytes(), nil
}

// nonce is ten random digits, like WeChat's own.
func (s *Service) nonce() (string, error) {
	var b [10]byte
	if _, err := io.ReadFull(s.random, b[:]); err != nil {
		return "", fmt.Errorf("callback: nonce: %w", err)
	}
	for i := range b {
		b[i] = '0' + b[i]%10
	}
	return string(b[:]), nil
}

// Dispatch states, so that exactly one of the dispatching goroutine and the
// deadline decides what happens to the reply.
const (
	dispatchRunning int32 = iota
	dispatchDelivered
	dispatchAbandoned
)

// dispatch asks the dispatcher for a reply and waits for it until
// deadline. A panic in a subscriber is recovered. A reply after the
// deadline finds the answer ("success") already gone, and late is true:
// with a LateSender the subscriber keeps LateWindow more to answer, and its
// reply is sent as a customer service message; without one it is dropped.
func (s *Service) dispatch(ctx context.Context, msg *Message, deadline time.Time) (reply *Reply, source Source, late bool) {
	if reply, source, ok := s.dispatcher.rulesOnly(msg); ok {
		// No backend can take it: the rules answer here, without the
		// goroutine and timer a subscriber's deadline needs (a tenth of
		// a message's CPU in BenchmarkTextMessageSafeMode).
		return reply, source, false
	}
	// Not cancelled with the request: if WeChat hangs up, the reply is
	// still computed and stored for its retry.
	until := deadline
	if s.late != nil {
		until = deadline.Add(s.lateWindow)
	}
	dctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), until)
	type result struct {
		reply  *Reply
		source Source
		err    error
	}
	done := make(chan result, 1)
	var state atomic.Int32
	go func() {
		defer cancel()
		var res result
		func() {
			defer func() {
				if p := recover(); p != nil {
					res = result{source: SourceSubscriber, err: fmt.Errorf("panic: %v", p)}
				}
			}()
			res.reply, res.source, res.err = s.dispatcher.Dispatch(dctx, msg)
		}()
		if state.CompareAndSwap(dispatchRunning, dispatchDelivered) {
			done <- res
			return
		}
		s.lateReply(context.WithoutCancel(ctx), msg, res.reply, res.source, res.err)
	}()

	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	var res result
	select {
	case res = <-done:
	case <-timer.C:
		if state.CompareAndSwap(dispatchRunning, dispatchAbandoned) {
			s.log.Warn("callback reply not ready in time, answered success",
				"msg_type", msg.MsgType, "event", msg.Event, "msg_id", msg.MsgID, "timeout", s.replyTimeout)
			return nil, SourceNone, true
		}
		res = <-done // delivered just as the timer fired
	}
	if res.err != nil {
		s.log.Warn("callback dispatch failed, answered success",
			"msg_type", msg.MsgType, "msg_id", msg.MsgID, "source", string(res.source), "err", res.err)
		return nil, res.source, false
	}
	return res.reply, res.source, false
}
