package appliance

import (
	"context"
	"net/http"
	"time"

	"github.com/100steps/wxappliance/appliance/wire"
)

// routes is the route table: every path the appliance answers is here.
func (a *Appliance) routes() http.Handler {
	mux := http.NewServeMux()
	wechat := a.cfg.WeChat.Timeout.D()
	browser := func(method, path string, timeout time.Duration, h handlerFunc) {
		mux.HandleFunc(method+" "+path, a.handle(timeout, h))
		// The same path without a method catches every other method.
		mux.HandleFunc(path, methodNotAllowed(method))
	}

	// The seed contract's routes (S1, S2, U1-U3, O1, O2), plus raw media.
	browser("GET", "/auth", wechat, a.limit(a.auth))
	browser("GET", "/auth/code", wechat, a.limit(a.authCode))
	browser("POST", "/auth/logout", wechat, a.authLogout)
	browser("GET", "/auth/user/openid", wechat, a.authOpenID)
	browser("GET", "/auth/user", wechat, a.authUser)
	browser("GET", "/offiaccount/user", wechat, a.offiaccountUser)
	browser("POST", "/offiaccount/jssdk", wechat, a.jssdkConfig)
	browser("GET", "/offiaccount/media", a.cfg.Media.Timeout.D(), a.mediaBase64)
	browser("GET", "/offiaccount/media/raw", a.cfg.Media.Timeout.D(), a.mediaRaw)

	if a.rpc != nil {
		mux.Handle(a.cfg.RPC.Path, a.rpc) // JSON-RPC over WebSocket for backends
	}
	mux.HandleFunc("GET /healthz", a.healthz)
	mux.HandleFunc("GET /readyz", a.readyz)
	a.callbackRoutes(mux) // callback.path (GET, POST) and /MP_verify_*.txt; see callback.go
	if a.sandbox != nil {
		mux.Handle("/sandbox/", http.StripPrefix("/sandbox", a.sandbox))
	}
	mux.HandleFunc("/", notFound)

	var h http.Handler = mux
	h = cors(a.cfg.CORS.AllowedOrigins, h)
	h = limitBodies(int64(a.cfg.Server.MaxBodyBytes), h)
	h = accessLog(a.log, a.ops.httpRequest, h)
	return recoverPanics(a.log, h)
}

func (a *Appliance) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyz answers 200 only when the store is open and an access_token can be
// had, so a load balancer or systemd watchdog sees a misconfigured secret
// or an IP missing from WeChat's whitelist.
func (a *Appliance) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), a.cfg.WeChat.Timeout.D()+time.Second)
	defer cancel()
	checks := a.ready(ctx)
	body := map[string]any{"ready": true}
	out := map[string]string{}
	status := http.StatusOK
	for name, err := range checks {
		out[name] = describe(err)
		if err != nil {
			status = http.StatusServiceUnavailable
			body["ready"] = false
		}
	}
	body["checks"] = out
	writeJSON(w, status, body)
}

// recoverPanics turns a handler panic into a 500 envelope and a log line.
func recoverPanics(log interface {
	Error(msg string, args ...any)
}, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			p := recover()
			if p == nil || p == http.ErrAbortHandler {
				if p != nil {
					panic(p)
				}
				return
			}
			log.Error("handler panicked", "path", r.URL.Path, "panic", p)
			writeEnvelope(w, http.StatusInternalServerError, wire.MsgServerError)
		}()
		next.ServeHTTP(w, r)
	})
}
