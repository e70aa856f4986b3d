package appliance

import (
	"net/http"
	"slices"
	"strings"
	"time"
)

// handlerFunc is a browser route: it writes its success answer and returns
// errors for handle to map to the envelope in one place.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// handle adapts h, giving it a deadline: a route waiting on WeChat answers
// 504 when the deadline passes, never hangs.
func (a *Appliance) handle(timeout time.Duration, h handlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx := newLazyDeadline(r.Context(), timeout)
		defer ctx.stop()
		if err := h(w, r.WithContext(ctx)); err != nil {
			writeError(w, r, a.log, err)
		}
	}
}

// methodNotAllowed answers a known path asked with the wrong method.
func methodNotAllowed(allow string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		writeEnvelope(w, http.StatusMethodNotAllowed, "请求方法不允许，应为 "+allow)
	}
}

func notFound(w http.ResponseWriter, r *http.Request) {
	writeEnvelope(w, http.StatusNotFound, "接口不存在")
}

// isBrowserRoute reports whether path is one of the seed contract's routes,
// the only ones CORS applies to.
func isBrowserRoute(path string) bool {
	return path == "/auth" || strings.HasPrefix(path, "/auth/") || strings.HasPrefix(path, "/offiaccount/")
}

// cors answers only the origins in cors.allowed_origins, with credentials,
// so a page on another site cannot read a logged-in user's data. Requests
// from other origins are served without CORS headers: the browser then
// withholds the answer from the page.
func cors(origins []string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		if origin == "" || !isBrowserRoute(r.URL.Path) {
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Add("Vary", "Origin")
		allowed := slices.Contains(origins, origin)
		preflight := r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != ""
		if preflight {
			w.Header().Add("Vary", "Access-Control-Request-Method")
			w.Header().Add("Vary", "Access-Control-Request-Headers")
			if !allowed {
				writeEnvelope(w, http.StatusForbidden, "跨域来源不在允许列表中")
				return
			}
			setCORSHeaders(w, origin)
			w.Header().Set("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
			if h := r.Header.Get("Access-Control-Request-Headers"); h != "" {
				w.Header().Set("Access-Control-Allow-Headers", h)
			}
			w.Header().Set("Access-Control-Max-Age", "600")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		if allowed {
			setCORSHeaders(w, origin)
		}
		next.ServeHTTP(w, r)
	})
}

func setCORSHeaders(w http.ResponseWriter, origin string) {
	w.Header().Set("Access-Control-Allow-Origin", origin)
	w.Header().Set("Access-Control-Allow-Credentials", "true")
}

// limitBodies caps every request body; a handler reading past the cap gets
// an *http.MaxBytesError, answered 413.
func limitBodies(max int64, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, max)
		next.ServeHTTP(w, r)
	})
}
