// Package jssdk holds the jsapi_ticket and computes the wx.config signature
// pages need before they may call JS-SDK functions.
package jssdk

import (
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/100steps/wxappliance/kv"
	"github.com/100steps/wxappliance/oauth"
)

// ErrBadURL means the page URL to sign is missing, not absolute http(s), or
// not on an allowed host.
var ErrBadURL = errors.New("jssdk: bad page url")

// ticketKey is where the jsapi_ticket lives in kv.
const ticketKey = "cred/jsapi_ticket"

// Config is what a page passes to wx.config. It never contains the ticket.
type Config struct {
	AppID     string `json:"appid"`
	Timestamp int64  `json:"timestamp"`
	NonceStr  string `json:"noncestr"`
	Signature string `json:"signature"`
}

// Options configures a Service.
type Options struct {
	// AllowedHost reports whether pages on host may be signed; nil allows any
	// host. Without a restriction the service signs for any site, which lets
	// a stranger use this account's JS-SDK permissions on their own pages.
	AllowedHost func(host string) bool
	// Bus and Instance are as in oauth.CredentialConfig: nil and "" for a
	// store this process alone uses.
	Bus      kv.Bus
	Instance string
	Now      func() time.Time
	Logger   *slog.Logger
	// ObserveFetch is told of every fetch of the ticket (see
	// oauth.CredentialConfig.ObserveFetch).
	ObserveFetch func(oauth.Fetched)
}

// Service signs JS-SDK configs with a jsapi_ticket it keeps fresh.
type Service struct {
	app     *oauth.App
	ticket  *oauth.Credential
	allowed func(string) bool
	now     func() time.Time
}

// New returns a Service whose ticket is stored in store and fetched with
// app's access_token.
func New(app *oauth.App, store kv.Store, opts Options) *Service {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Service{app: app, allowed: opts.AllowedHost, now: opts.Now}
	s.ticket = oauth.NewCredential(oauth.CredentialConfig{
		Name:     "jsapi_ticket",
		Key:      ticketKey,
		Store:    store,
		Bus:      opts.Bus,
		Instance: opts.Instance,
		Fetch:    s.fetchTicket,
		Now:      opts.Now,
		Logger:   opts.Logger,

		ObserveFetch: opts.ObserveFetch,
	})
	return s
}

// Run keeps the ticket fresh, and in step with other instances, until ctx
// ends.
func (s *Service) Run(ctx context.Context) { s.ticket.Run(ctx) }

// PeekTicket returns the ticket this process holds, without any I/O, for
// an operator's view; ok is false when it holds none that has not expired.
func (s *Service) PeekTicket() (oauth.Token, bool) { return s.ticket.Peek() }

// TicketFetches reports how many times this process fetched the ticket.
func (s *Service) TicketFetches() int { return s.ticket.Fetches() }

// Config signs pageURL (cut at '#') with a fresh nonce and the current time.
func (s *Service) Config(ctx context.Context, pageURL string) (Config, error) {
	page, err := s.checkURL(pageURL)
	if err != nil {
		return Config{}, err
	}
	tok, err := s.ticket.Get(ctx)
	if err != nil {
		return Config{}, err
	}
	// 26 letters and digits: nothing in it needs escaping anywhere.
	nonce := rand.Text()
	ts := s.now().Unix()
	return Config{
		AppID:     s.app.ID(),
		Timestamp: ts,
		NonceStr:  nonce,
		Signature: Sign(tok.Value, nonce, ts, page),
	}, nil
}

// Sign is WeChat's signature: the lowercase hex sha1 of
// "jsapi_ticket=T&noncestr=N&timestamp=TS&url=U" with nothing escaped and the
// url cut at '#'.
func Sign(ticket, nonce string, timestamp int64, pageURL string) string {
	pageURL, _, _ = strings.Cut(pageURL, "#")
	// Built by hand rather than with fmt: every JS-SDK page load signs.
	b := make([]byte, 0, 64+len(ticket)+len(nonce)+len(pageURL))
	b = append(b, "jsapi_ticket="...)
	b = append(b, ticket...)
	b = append(b, "&noncestr="...)
	b = append(b, nonce...)
	b = append(b, "&timestamp="...)
	b = strconv.AppendInt(b, timestamp, 10)
	b = append(b, "&url="...)
	b = append(b, pageURL...)
	sum := sha1.Sum(b)
	return hex.EncodeToString(sum[:])
}

// checkURL returns the URL as it will be signed: exactly what the page sent,
// cut at '#'. It is parsed only to check it; re-serialising it would change
// escapes and break the signature.
func (s *Service) checkURL(raw string) (string, error) {
	raw, _, _ = strings.Cut(raw, "#")
	if raw == "" {
		return "", fmt.Errorf("%w: missing", ErrBadURL)
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return "", fmt.Errorf("%w: %q is not an absolute http(s) URL", ErrBadURL, raw)
	}
	if strings.ContainsAny(raw, " \r\n\t") {
		return "", fmt.Errorf("%w: contains whitespace", ErrBadURL)
	}
	if s.allowed != nil && !s.allowed(u.Host) {
		return "", fmt.Errorf("%w: host %q is not allowed", ErrBadURL, u.Host)
	}
	return raw, nil
}

func (s *Service) fetchTicket(ctx context.Context) (string, time.Duration, error) {
	var out struct {
		Ticket    string `json:"ticket"`
		ExpiresIn int64  `json:"expires_in"`
	}
	err := s.app.CallJSON(ctx, oauth.Request{
		Path:  "cgi-bin/ticket/getticket",
		Query: url.Values{"type": {"jsapi"}},
	}, &out)
	if err != nil {
		return "", 0, err
	}
	return out.Ticket, time.Duration(out.ExpiresIn) * time.Second, nil
}
