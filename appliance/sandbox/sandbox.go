// Package sandbox is an embedded fake of WeChat's HTTP servers
// (api.weixin.qq.com and open.weixin.qq.com) for running and testing the
// appliance with no Official Account and no network.
//
// A *Sandbox is an http.Handler serving paths without any mount prefix
// ("/cgi-bin/token", "/sns/userinfo", ...). It follows WeChat's documented
// request and response shapes and error codes, counts calls per endpoint and
// lets tests inject faults, either through methods or over HTTP under
// "_control/".
//
// Credentials it issues are signed, self-validating strings rather than
// entries in a table, so a new Sandbox built with the same AppID and
// AppSecret (the appliance after a restart) still accepts tokens that the
// appliance stored in its database.
package sandbox

import (
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Default credentials, used when Options leaves them empty; in sandbox
// mode the appliance's config defaults to them, so the example config runs
// as it is.
const (
	DefaultAppID          = "wxsandbox00000000"
	DefaultAppSecret      = "sandbox-secret"
	DefaultCallbackToken  = "sandboxtoken"
	DefaultEncodingAESKey = "SandboxEncodingAESKey0123456789abcdefghijkl"
)

// Lifetimes WeChat documents.
const (
	defaultTTL      = 7200 * time.Second
	tokenOverlap    = 5 * time.Minute     // an old app token keeps working this long after a new one is issued
	codeTTL         = 5 * time.Minute     // oauth code validity
	refreshTokenTTL = 30 * 24 * time.Hour // sns refresh_token validity
)

// Options configures a Sandbox. The zero value is usable.
type Options struct {
	// AppID and AppSecret are the only credentials accepted. They default
	// to DefaultAppID and DefaultAppSecret.
	AppID, AppSecret string
	// TokenTTL is the expires_in of app access tokens and jsapi tickets.
	TokenTTL time.Duration
	// UserTokenTTL is the expires_in of web-auth (sns) access tokens.
	UserTokenTTL time.Duration
	// Now is the clock; tests inject one to make tokens expire.
	Now func() time.Time
	// Logger receives a debug line per request; nil discards.
	Logger *slog.Logger
	// Callback is where the push page sends test messages: the
	// appliance's own callback. Zero: the page says the callback is off.
	Callback CallbackTarget
}

// Sandbox is the fake WeChat. Its methods are safe for concurrent use.
type Sandbox struct {
	appID, secret string
	tokenTTL      time.Duration
	userTokenTTL  time.Duration
	now           func() time.Time
	log           *slog.Logger
	signer        *signer
	routes        map[string]route
	callback      CallbackTarget

	mu     sync.Mutex
	counts map[string]int
	faults map[string]*Fault
	state  state
}

// state is what the sandbox remembers between requests. None of it is
// needed to validate a credential issued by an earlier Sandbox: losing it
// (a restart) only forgets codes, menus and which token is "current".
type state struct {
	lastIssued  int64 // UnixNano of the newest credential issued, kept strictly increasing
	expiredUpTo int64 // credentials with iat <= this answer 42001 (ExpireTokens); 0 = none

	appCurrent    int64  // iat of the newest cgi-bin/token token
	stableCurrent int64  // iat of the newest stable token
	stableToken   string // returned again by stable_token while valid
	tickets       map[string]string

	codes map[string]*authCode

	menu   []byte   // raw JSON body of the last menu/create
	custom [][]byte // the last customer service messages received
	tags   []tag
	nextID int64 // msgid / tag id source
}

// route is one API endpoint.
type route struct {
	handle func(s *Sandbox, w http.ResponseWriter, r *http.Request)
	// ctype is the Content-Type WeChat uses for this endpoint's JSON,
	// including its error answers.
	ctype string
}

// Content types as real WeChat sends them: some endpoints answer
// text/plain, others application/json with the non-standard "encoding"
// parameter. Clients must not depend on either.
const (
	ctypeText = "text/plain"
	ctypeJSON = "application/json; encoding=utf-8"
)

// New returns a Sandbox configured by opts.
func New(opts Options) *Sandbox {
	s := &Sandbox{
		appID:        opts.AppID,
		secret:       opts.AppSecret,
		tokenTTL:     opts.TokenTTL,
		userTokenTTL: opts.UserTokenTTL,
		now:          opts.Now,
		log:          opts.Logger,
		callback:     opts.Callback,
		counts:       make(map[string]int),
		faults:       make(map[string]*Fault),
	}
	if s.appID == "" {
		s.appID = DefaultAppID
	}
	if s.secret == "" {
		s.secret = DefaultAppSecret
	}
	if s.tokenTTL <= 0 {
		s.tokenTTL = defaultTTL
	}
	if s.userTokenTTL <= 0 {
		s.userTokenTTL = defaultTTL
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.signer = newSigner(s.appID, s.secret)
	s.state.tickets = make(map[string]string)
	s.state.codes = make(map[string]*authCode)
	s.state.tags = defaultTags()
	s.state.nextID = 1000
	s.routes = routes()
	return s
}

// routes lists every API endpoint by its path without the leading slash.
func routes() map[string]route {
	return map[string]route{
		// Credentials.
		"cgi-bin/token":            {(*Sandbox).handleToken, ctypeText},
		"cgi-bin/stable_token":     {(*Sandbox).handleStableToken, ctypeText},
		"cgi-bin/ticket/getticket": {(*Sandbox).handleGetTicket, ctypeText},

		// Web authorization (open.weixin.qq.com pages, api.weixin.qq.com sns).
		"connect/oauth2/authorize":         {(*Sandbox).handleAuthorize, ctypeJSON},
		"connect/oauth2/authorize/confirm": {(*Sandbox).handleAuthorizeConfirm, ctypeJSON},
		"sns/oauth2/access_token":          {(*Sandbox).handleSNSAccessToken, ctypeJSON},
		"sns/oauth2/refresh_token":         {(*Sandbox).handleSNSRefresh, ctypeJSON},
		"sns/auth":                         {(*Sandbox).handleSNSAuth, ctypeJSON},
		"sns/userinfo":                     {(*Sandbox).handleSNSUserinfo, ctypeJSON},

		// Users and media.
		"cgi-bin/user/info": {(*Sandbox).handleUserInfo, ctypeJSON},
		"cgi-bin/user/get":  {(*Sandbox).handleUserGet, ctypeJSON},
		"cgi-bin/media/get": {(*Sandbox).handleMediaGet, ctypeText},

		// Management APIs, for the generic allowlisted-call feature.
		"cgi-bin/menu/create":               {(*Sandbox).handleMenuCreate, ctypeJSON},
		"cgi-bin/menu/get":                  {(*Sandbox).handleMenuGet, ctypeJSON},
		"cgi-bin/get_current_selfmenu_info": {(*Sandbox).handleSelfMenuInfo, ctypeJSON},
		"cgi-bin/menu/delete":               {(*Sandbox).handleMenuDelete, ctypeJSON},
		"cgi-bin/message/custom/send":       {(*Sandbox).handleCustomSend, ctypeJSON},
		"cgi-bin/message/template/send":     {(*Sandbox).handleTemplateSend, ctypeJSON},
		"cgi-bin/message/subscribe/bizsend": {(*Sandbox).handleBizSend, ctypeJSON},
		"wxaapi/newtmpl/gettemplate":        {(*Sandbox).handleGetTemplates, ctypeJSON},
		"cgi-bin/qrcode/create":             {(*Sandbox).handleQRCodeCreate, ctypeJSON},
		"cgi-bin/tags/create":               {(*Sandbox).handleTagsCreate, ctypeJSON},
		"cgi-bin/tags/get":                  {(*Sandbox).handleTagsGet, ctypeJSON},
	}
}

// AppID returns the AppID the sandbox accepts.
func (s *Sandbox) AppID() string { return s.appID }

// ServeHTTP dispatches r. API endpoints are counted and subject to faults;
// the index page, _control/ and _files/ are not.
func (s *Sandbox) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := strings.TrimPrefix(r.URL.Path, "/")
	switch {
	case r.URL.Path == "":
		// Mounted with http.StripPrefix("/sandbox"), a request for
		// "/sandbox" arrives with an empty path; relative links on the index
		// only resolve from "/sandbox/".
		http.Redirect(w, r, basePath(r)+"/", http.StatusMovedPermanently)
		return
	case path == "":
		s.serveIndex(w, r)
		return
	case path == "demo":
		s.serveDemo(w, r)
		return
	case path == "push":
		s.servePush(w, r)
		return
	case strings.HasPrefix(path, controlPrefix):
		s.serveControl(w, r, strings.TrimPrefix(path, controlPrefix))
		return
	case strings.HasPrefix(path, filesPrefix):
		s.serveFile(w, r, strings.TrimPrefix(path, filesPrefix))
		return
	}
	rt, ok := s.routes[path]
	if !ok {
		http.Error(w, "sandbox: no such endpoint", http.StatusNotFound)
		return
	}
	f := s.countAndFault(path)
	s.log.Debug("sandbox request", "endpoint", path, "method", r.Method, "fault", f != nil)
	if f != nil && s.applyFault(w, r, path, rt, *f) {
		return
	}
	rt.handle(s, w, r)
}
