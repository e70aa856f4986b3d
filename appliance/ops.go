package appliance

import (
	"context"
	"errors"
	"net/http"
	"net/http/pprof"
	"runtime/debug"
	"time"

	"github.com/100steps/wxappliance/appliance/metrics"
	"github.com/100steps/wxappliance/appliance/status"
	"github.com/100steps/wxappliance/callback"
	"github.com/100steps/wxappliance/kv"
	"github.com/100steps/wxappliance/oauth"
)

// What the operator sees, on the admin listener: Prometheus metrics at
// /metrics, the status page at /, pprof under /debug/pprof/ when
// server.pprof is on. The services report through their observer hooks;
// ops points every hook at both the metrics and the status page.

type ops struct {
	metrics *metrics.Metrics
	status  *status.Status
}

func newOps(version string, now func() time.Time) *ops {
	if version == "" {
		version = buildVersion()
	}
	return &ops{metrics: metrics.New(version), status: status.New(version, now)}
}

func (o *ops) wechatCall(api, errcode string, d time.Duration) {
	o.metrics.WeChatCall(api, errcode, d)
	o.status.WeChatCall(api, errcode, d)
}

func (o *ops) credentialFetched(f oauth.Fetched) {
	o.metrics.CredentialFetched(f)
	o.status.CredentialFetched(f)
}

func (o *ops) callbackMessage(m callback.Observation) {
	o.metrics.CallbackMessage(m)
	o.status.CallbackMessage(m)
}

func (o *ops) lateReply(result string) { o.metrics.LateReply(result) }

func (o *ops) rpcCall(method string, code int64, d time.Duration) {
	o.metrics.RPCCall(method, code, d)
	o.status.RPCCall(method, code, d)
}

func (o *ops) storageError(op string) {
	o.metrics.StorageError(op)
	o.status.StorageError(op)
}

// httpRequest is accessLog's observer on the public listener. The route is
// the pattern the mux matched, never the raw path, so that the label has as
// many values as the route table has rows; the catch-all "/" is the
// notFound handler.
func (o *ops) httpRequest(r *http.Request, status int, d time.Duration) {
	route := r.Pattern
	if route == "" || route == "/" {
		route = "unmatched"
	}
	o.metrics.HTTPRequest(route, status, d)
}

// watch tells the metrics and the status page where to read the state of
// the services, once they are built.
func (a *Appliance) watchOps() {
	tokenAPI := "cgi-bin/stable_token"
	if a.cfg.WeChat.TokenAPI == oauth.TokenAPIToken {
		tokenAPI = "cgi-bin/token"
	}
	now := a.now
	if now == nil {
		now = time.Now
	}
	creds := []status.Credential{
		{Name: "access_token", API: tokenAPI, Peek: a.app.PeekToken},
		{Name: "jsapi_ticket", API: "cgi-bin/ticket/getticket", Peek: a.jssdk.PeekTicket},
	}
	for _, c := range creds {
		a.ops.metrics.WatchCredential(c.Name, c.Peek, now)
	}
	st := status.Storage{Backend: a.cfg.Storage.Backend}
	sizer, _ := a.store.(metrics.Sizer)
	if _, ok := a.store.(*kv.Badger); ok {
		st.Backend, st.Dir = BackendBadger, a.cfg.Storage.Dir
		if sizer == nil {
			sizer = metrics.DirSizer(st.Dir)
		}
		st.Space = func() (int64, int64, error) { return metrics.DiskSpace(st.Dir) }
	}
	if sizer != nil {
		st.Size = sizer.Size
	}
	a.ops.metrics.WatchStorage(sizer, st.Dir)
	src := status.Sources{
		AppID:       a.cfg.WeChat.AppID,
		Sandbox:     a.cfg.WeChat.Sandbox,
		Credentials: creds,
		Callback:    a.callback != nil,
		Storage:     st,
	}
	if a.rpc != nil {
		src.RPC = a.rpc.Connections
	}
	a.ops.status.SetSources(src)
}

// opsRoutes adds the operator's routes to the admin listener's mux.
func (a *Appliance) opsRoutes(mux *http.ServeMux) {
	mux.Handle("GET /metrics", a.ops.metrics.Handler())
	mux.Handle("GET /{$}", a.ops.status)
	if !a.cfg.Server.Pprof {
		return // /debug/pprof/ falls to notFound
	}
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
}

// buildVersion is the version when Options.Version is empty (tests, or an
// embedding program): the module version the build recorded, else "devel"
// with the VCS revision when there is one.
func buildVersion() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	var rev, modified string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = "+dirty"
			}
		}
	}
	if v := info.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev != "" {
		return "devel-" + rev + modified
	}
	return "devel"
}

// countingStore counts failed operations for the metrics and the status
// page. Not found is an answer, not a failure, and a caller giving up is
// the caller's business.
type countingStore struct {
	kv.Store
	failed func(op string)
}

func (s countingStore) count(op string, err error) {
	if err != nil && !errors.Is(err, kv.ErrNotFound) && !errors.Is(err, context.Canceled) {
		s.failed(op)
	}
}

func (s countingStore) Get(ctx context.Context, key string) ([]byte, error) {
	v, err := s.Store.Get(ctx, key)
	s.count("get", err)
	return v, err
}

func (s countingStore) Put(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	err := s.Store.Put(ctx, key, value, ttl)
	s.count("put", err)
	return err
}

func (s countingStore) Delete(ctx context.Context, key string) error {
	err := s.Store.Delete(ctx, key)
	s.count("delete", err)
	return err
}

func (s countingStore) Take(ctx context.Context, key string) ([]byte, error) {
	v, err := s.Store.Take(ctx, key)
	s.count("take", err)
	return v, err
}

func (s countingStore) PutIfAbsent(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	ok, err := s.Store.PutIfAbsent(ctx, key, value, ttl)
	s.count("put_if_absent", err)
	return ok, err
}

func (s countingStore) CompareAndSwap(ctx context.Context, key string, old, value []byte, ttl time.Duration) (bool, error) {
	ok, err := s.Store.CompareAndSwap(ctx, key, old, value, ttl)
	s.count("compare_and_swap", err)
	return ok, err
}

func (s countingStore) CompareAndDelete(ctx context.Context, key string, old []byte) (bool, error) {
	ok, err := s.Store.CompareAndDelete(ctx, key, old)
	s.count("compare_and_delete", err)
	return ok, err
}

var _ kv.Store = countingStore{}
