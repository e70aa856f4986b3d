// Package status keeps what the operator's status page shows (GET / on the
// admin listener): fed by the same observer hooks as the metrics, in
// bounded ring buffers, and read at render time from the services
// (credentials, RPC connections, storage). Nothing it holds or shows is a
// secret: credentials are reported by their times and errors, pushes by
// their type and outcome, never their content or sender.
package status

import (
	"errors"
	"net/netip"
	"regexp"
	"strconv"
	"sync"
	"time"

	"github.com/100steps/wxappliance/callback"
	"github.com/100steps/wxappliance/oauth"
	"github.com/100steps/wxappliance/rpc"
)

// Recent is how many pushes and upstream errors the page lists.
const Recent = 20

// maxText bounds any text from outside (errmsg, event names) kept here.
const maxText = 300

// Credential is a credential the page describes.
type Credential struct {
	Name string // "access_token", "jsapi_ticket"
	API  string // where it comes from, e.g. "cgi-bin/stable_token"
	// Peek returns what this process holds, without I/O.
	Peek func() (oauth.Token, bool)
}

// Storage is what the page shows of the store.
type Storage struct {
	Backend string // "badger", ...
	Dir     string // storage.dir; empty for a networked store
	// Size, when set, returns the store's size on disk.
	Size func() (lsm, vlog int64)
	// Space, when set, returns the free and total bytes of Dir's file system.
	Space func() (free, total int64, err error)
}

// Sources are where the page reads the state of the services at render
// time. Zero fields are left off the page.
type Sources struct {
	AppID       string
	Sandbox     bool
	Credentials []Credential
	Callback    bool                    // the callback is on
	RPC         func() []rpc.Connection // nil when RPC is off
	Storage     Storage
}

// Status collects what the page shows. Its methods have the signatures of
// the services' observer hooks and are safe for concurrent use.
type Status struct {
	version string
	now     func() time.Time
	started time.Time

	mu        sync.Mutex
	src       Sources
	creds     map[string]*credState
	outcomes  map[callback.Outcome]int
	messages  ring[pushEvent]
	upstream  ring[upstreamError]
	calls     int // WeChat calls, all outcomes
	failed    int // of which failed
	rpcCalls  int
	rpcFailed int
	storeErrs map[string]int
}

// credState is what the hooks told of one credential.
type credState struct {
	fetches   int
	lastOK    time.Time
	lastErrAt time.Time
	lastErr   fetchError
}

type fetchError struct {
	errcode string // as oauth.Errcode names it
	errmsg  string // WeChat's, when it refused
}

type pushEvent struct {
	at                         time.Time
	msgType, event, mode, what string
	outcome                    callback.Outcome
}

type upstreamError struct {
	at           time.Time
	api, errcode string
}

// New returns an empty Status. now is the clock credentials are timed by.
func New(version string, now func() time.Time) *Status {
	if now == nil {
		now = time.Now
	}
	return &Status{
		version:   version,
		now:       now,
		started:   now(),
		creds:     map[string]*credState{},
		outcomes:  map[callback.Outcome]int{},
		messages:  newRing[pushEvent](Recent),
		upstream:  newRing[upstreamError](Recent),
		storeErrs: map[string]int{},
	}
}

// SetSources tells the Status where to read the services' state.
func (s *Status) SetSources(src Sources) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.src = src
}

// WeChatCall has the signature of oauth.ClientConfig.Observe.
func (s *Status) WeChatCall(api, errcode string, _ time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if errcode == "0" {
		return
	}
	s.failed++
	s.upstream.add(upstreamError{at: s.now(), api: clip(api), errcode: errcode})
}

// CredentialFetched has the signature of oauth.CredentialConfig.ObserveFetch.
func (s *Status) CredentialFetched(f oauth.Fetched) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.creds[f.Credential]
	if c == nil {
		c = &credState{}
		s.creds[f.Credential] = c
	}
	c.fetches++
	if f.Err == nil {
		c.lastOK = f.At
		return
	}
	c.lastErrAt = f.At
	c.lastErr = fetchError{errcode: oauth.Errcode(f.Err)}
	if apiErr, ok := errors.AsType[*oauth.APIError](f.Err); ok {
		c.lastErr.errmsg = clip(apiErr.Msg)
	}
}

// CallbackMessage has the signature of callback.Config.Observe.
func (s *Status) CallbackMessage(o callback.Observation) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.outcomes[o.Outcome]++
	s.messages.add(pushEvent{
		at:      s.now(),
		msgType: clip(o.MsgType),
		event:   clip(o.Event),
		mode:    o.Mode,
		outcome: o.Outcome,
		what:    refusal(o.Err),
	})
}

// refusals name why a push was refused, in words of our own: an error's
// text could quote the request.
var refusals = []struct {
	err  error
	what string
}{
	{callback.ErrSignature, "bad signature"},
	{callback.ErrStale, "timestamp out of window"},
	{callback.ErrAppID, "for another AppID"},
	{callback.ErrPlaintext, "plaintext refused (AES key set)"},
	{callback.ErrNoKey, "encrypted, but callback.encoding_aes_key is not set"},
	{callback.ErrDecrypt, "decryption failed"},
	{callback.ErrMalformed, "malformed"},
}

func refusal(err error) string {
	if err == nil {
		return ""
	}
	for _, r := range refusals {
		if errors.Is(err, r.err) {
			return r.what
		}
	}
	return "invalid request"
}

// RPCCall has the signature of rpc.Options.ObserveCall.
func (s *Status) RPCCall(_ string, code int64, _ time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rpcCalls++
	if code != 0 {
		s.rpcFailed++
	}
}

// StorageError counts a failed storage operation.
func (s *Status) StorageError(op string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.storeErrs[op]++
}

// ring keeps the last n items added.
type ring[T any] struct {
	items []T
	next  int
}

func newRing[T any](n int) ring[T] { return ring[T]{items: make([]T, 0, n)} }

func (r *ring[T]) add(v T) {
	if len(r.items) < cap(r.items) {
		r.items = append(r.items, v)
		return
	}
	r.items[r.next] = v
	r.next = (r.next + 1) % len(r.items)
}

// newestFirst returns a copy, the last item added first.
func (r *ring[T]) newestFirst() []T {
	out := make([]T, 0, len(r.items))
	for i := range len(r.items) {
		j := (r.next - 1 - i + 2*len(r.items)) % len(r.items)
		out = append(out, r.items[j])
	}
	return out
}

func clip(s string) string {
	if len(s) <= maxText {
		return s
	}
	// Cut on a rune boundary.
	for i := maxText; i > 0; i-- {
		if s[i]&0xC0 != 0x80 {
			return s[:i] + "…"
		}
	}
	return ""
}

// whitelistIP finds the address WeChat names in a 40164 errmsg: "invalid
// ip 1.2.3.4 ipv6 ::ffff:1.2.3.4, not in whitelist".
var whitelistIP = regexp.MustCompile(`invalid ip ([0-9A-Fa-f.:]+)`)

// hint says what to do about a failed credential fetch, and the IP WeChat
// saw for a 40164.
func hint(e fetchError) (text, ip string) {
	code, _ := strconv.Atoi(e.errcode)
	switch {
	case code == 40164 || code == 61004:
		if m := whitelistIP.FindStringSubmatch(e.errmsg); m != nil {
			if addr, err := netip.ParseAddr(m[1]); err == nil {
				ip = addr.String()
			}
		}
		return "This server's IP is not on the account's whitelist: add it to the IP whitelist in the Official Account admin (基本配置 → IP白名单).", ip
	case code == 89503 || code == 89506 || code == 89507:
		return "WeChat asks an administrator to confirm calls from this IP: confirm it in the Official Account admin, or add the IP to the IP whitelist (基本配置 → IP白名单).", ""
	case code == 40125 || code == 41004:
		return "WeChat refused the AppSecret: check wechat.app_secret (WXAPPLIANCE_APP_SECRET) against 基本配置 → AppSecret; it changes when someone resets it there.", ""
	case code == 40013 || code == 41002:
		return "WeChat does not know this AppID: check wechat.app_id against 基本配置 → AppID.", ""
	case code == 40001:
		return "WeChat refused the credential: another system may be fetching tokens with the same AppID (cgi-bin/token invalidates earlier ones); let this appliance be the only one.", ""
	case code == 45009:
		return "The daily quota of this API is used up: it resets at midnight (Beijing time), or in the admin's API quota page.", ""
	case code == 50002 || code == 50001:
		return "The account is not allowed to use this API (unverified, or the permission was withdrawn): see 接口权限 in the admin.", ""
	case code == -1:
		return "WeChat is busy: the appliance retries by itself.", ""
	}
	switch e.errcode {
	case "timeout", "network", "http_5xx":
		return "WeChat could not be reached in time: check this server's outbound network, DNS and wechat.api_base / wechat.api_fallback.", ""
	case "malformed":
		return "WeChat answered something unreadable: a proxy in between may be rewriting answers.", ""
	}
	return "", ""
}
