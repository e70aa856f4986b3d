// Package metrics holds the appliance's Prometheus series, in a registry of
// its own, and serves them at /metrics on the admin listener. It is the only
// package that imports Prometheus: the services report through small
// observer hooks in their configs, and the appliance points those hooks at
// the methods here. docs/metrics.md documents every series.
//
// Every label takes a bounded set of values, so that a misbehaving client
// cannot grow the registry: routes are the mux's patterns, API paths are
// capped, unknown message types are "other" and unknown RPC methods
// "unknown".
package metrics

import (
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/100steps/wxappliance/callback"
	"github.com/100steps/wxappliance/oauth"
)

const namespace = "wxappliance"

// MaxAPIs is how many distinct WeChat API paths get a label of their own;
// later ones share "other". The appliance calls a dozen; wechat.call lets
// backends choose paths under allowlisted prefixes.
const MaxAPIs = 64

// durationBuckets cover a fast local answer up to media downloads (media
// timeouts are tens of seconds).
var durationBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

// Metrics is the appliance's series. Its methods have the signatures of the
// services' observer hooks and are safe for concurrent use.
type Metrics struct {
	reg *prometheus.Registry

	httpRequests *prometheus.CounterVec
	httpDuration *prometheus.HistogramVec
	httpMu       sync.RWMutex
	httpSeries   map[httpKey]httpSeries

	wechatCalls    *prometheus.CounterVec
	wechatDuration *prometheus.HistogramVec
	apiMu          sync.Mutex
	apis           map[string]bool

	credRefreshes *prometheus.CounterVec

	callbackMessages  *prometheus.CounterVec
	callbackFallbacks prometheus.Counter
	lateReplies       *prometheus.CounterVec

	rpcConns prometheus.Gauge
	rpcCalls *prometheus.CounterVec

	storageErrors *prometheus.CounterVec
}

type httpKey struct {
	route  string
	status int
}

type httpSeries struct {
	count    prometheus.Counter
	duration prometheus.Observer
}

// New returns the series, registered with the Go and process collectors
// and wxappliance_build_info{version}.
func New(version string) *Metrics {
	m := &Metrics{
		reg:        prometheus.NewRegistry(),
		httpSeries: map[httpKey]httpSeries{},
		apis:       map[string]bool{},
	}
	m.httpRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "http_requests_total",
		Help: "Requests answered on the public listener, by route pattern and HTTP status.",
	}, []string{"route", "status"})
	m.httpDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace, Name: "http_request_duration_seconds",
		Help:    "Time to answer a request on the public listener, by route pattern.",
		Buckets: durationBuckets,
	}, []string{"route"})
	m.wechatCalls = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "wechat_calls_total",
		Help: `Calls to WeChat's API by path and outcome: errcode "0", WeChat's errcode, or timeout, http_5xx, network, malformed, canceled, other.`,
	}, []string{"api", "errcode"})
	m.wechatDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace, Name: "wechat_call_duration_seconds",
		Help:    "Time of a call to WeChat's API, failover and busy retry included, by path.",
		Buckets: durationBuckets,
	}, []string{"api"})
	m.credRefreshes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "credential_refreshes_total",
		Help: `Fetches of a credential from WeChat by this process: result "ok", or the errcode as in wechat_calls_total.`,
	}, []string{"credential", "result"})
	m.callbackMessages = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "callback_messages_total",
		Help: "Pushes from WeChat to the callback, by message type, encryption mode and how they were answered.",
	}, []string{"type", "mode", "outcome"})
	m.callbackFallbacks = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: namespace, Name: "callback_deadline_fallbacks_total",
		Help: `Pushes answered "success" because no reply was ready within callback.reply_timeout.`,
	})
	m.lateReplies = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "callback_late_replies_total",
		Help: `Replies that came after callback.reply_timeout, sent as customer service messages: result "0" when WeChat took one, else its errcode (45015 outside the 48 hours, 45047 quota, 48001 not authorized) or timeout, network, ...`,
	}, []string{"result"})
	m.rpcConns = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Name: "rpc_connections",
		Help: "Backends connected over JSON-RPC now.",
	})
	m.rpcCalls = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "rpc_calls_total",
		Help: `JSON-RPC requests answered, by method ("unknown" for names the server does not have) and error code ("0" for a result).`,
	}, []string{"method", "code"})
	m.storageErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "storage_errors_total",
		Help: "Failed storage operations (not-found and cancelled ones aside), by operation.",
	}, []string{"op"})
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Name: "build_info",
		Help:        "Always 1; the version label says which build runs.",
		ConstLabels: prometheus.Labels{"version": version},
	})
	buildInfo.Set(1)

	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildInfo,
		m.httpRequests, m.httpDuration,
		m.wechatCalls, m.wechatDuration,
		m.credRefreshes,
		m.callbackMessages, m.callbackFallbacks, m.lateReplies,
		m.rpcConns, m.rpcCalls,
		m.storageErrors,
	)
	return m
}

// Handler serves the registry in Prometheus's exposition formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		Registry:      m.reg, // counts its own failures in promhttp_metric_handler_errors_total
		ErrorHandling: promhttp.ContinueOnError,
	})
}

// HTTPRequest counts a request answered on the public listener. route must
// come from a bounded set: the mux's pattern, or one word for no route.
func (m *Metrics) HTTPRequest(route string, status int, d time.Duration) {
	key := httpKey{route, status}
	m.httpMu.RLock()
	s, ok := m.httpSeries[key]
	m.httpMu.RUnlock()
	if !ok {
		s = httpSeries{
			count:    m.httpRequests.WithLabelValues(route, strconv.Itoa(status)),
			duration: m.httpDuration.WithLabelValues(route),
		}
		m.httpMu.Lock()
		m.httpSeries[key] = s
		m.httpMu.Unlock()
	}
	s.count.Inc()
	s.duration.Observe(d.Seconds())
}

// WeChatCall counts an upstream call; it has the signature of
// oauth.ClientConfig.Observe.
func (m *Metrics) WeChatCall(api, errcode string, d time.Duration) {
	api = m.apiLabel(api)
	m.wechatCalls.WithLabelValues(api, errcode).Inc()
	m.wechatDuration.WithLabelValues(api).Observe(d.Seconds())
}

// apiLabel is api, or "other" once MaxAPIs others have been seen.
func (m *Metrics) apiLabel(api string) string {
	m.apiMu.Lock()
	defer m.apiMu.Unlock()
	if m.apis[api] {
		return api
	}
	if len(m.apis) >= MaxAPIs {
		return "other"
	}
	m.apis[api] = true
	return api
}

// CredentialFetched counts a fetch; it has the signature of
// oauth.CredentialConfig.ObserveFetch.
func (m *Metrics) CredentialFetched(f oauth.Fetched) {
	result := "ok"
	if f.Err != nil {
		result = oauth.Errcode(f.Err)
	}
	m.credRefreshes.WithLabelValues(f.Credential, result).Inc()
}

// WatchCredential adds wxappliance_credential_expiry_seconds{credential=name}:
// the seconds left before the credential this process holds expires,
// computed at scrape time by peek; 0 when it holds none.
func (m *Metrics) WatchCredential(name string, peek func() (oauth.Token, bool), now func() time.Time) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: namespace, Name: "credential_expiry_seconds",
		Help:        "Seconds before the credential this process holds expires; 0 when it holds none.",
		ConstLabels: prometheus.Labels{"credential": name},
	}, func() float64 {
		tok, ok := peek()
		if !ok {
			return 0
		}
		return max(0, tok.ExpiresAt.Sub(now()).Seconds())
	}))
}

// knownTypes are the message types that get a label of their own.
var knownTypes = map[string]bool{
	callback.TypeText: true, callback.TypeImage: true, callback.TypeVoice: true,
	callback.TypeVideo: true, callback.TypeShortVideo: true, callback.TypeLocation: true,
	callback.TypeLink: true, callback.TypeEvent: true,
}

var knownModes = map[string]bool{"plaintext": true, "compatible": true, "safe": true}

// CallbackMessage counts a push; it has the signature of
// callback.Config.Observe. A refused push has type and mode "none".
func (m *Metrics) CallbackMessage(o callback.Observation) {
	m.callbackMessages.WithLabelValues(TypeLabel(o), modeLabel(o.Mode), string(o.Outcome)).Inc()
	if o.Outcome == callback.OutcomeLate {
		m.callbackFallbacks.Inc()
	}
}

// LateReply counts a late reply's customer service message by WeChat's
// answer, an errcode label as oauth.Errcode makes it.
func (m *Metrics) LateReply(result string) {
	m.lateReplies.WithLabelValues(result).Inc()
}

// TypeLabel is a push's message type as a bounded label: "none" for a
// refused push, "other" for a type WeChat added after this build.
func TypeLabel(o callback.Observation) string {
	switch {
	case o.Outcome == callback.OutcomeRefused || o.MsgType == "":
		return "none"
	case knownTypes[o.MsgType]:
		return o.MsgType
	}
	return "other"
}

func modeLabel(mode string) string {
	if knownModes[mode] {
		return mode
	}
	return "none"
}

// RPCConn follows the connected backends; it has the signature of
// rpc.Options.ObserveConn.
func (m *Metrics) RPCConn(_ string, connected bool) {
	if connected {
		m.rpcConns.Inc()
		return
	}
	m.rpcConns.Dec()
}

// RPCCall counts a request; it has the signature of rpc.Options.ObserveCall.
// The rpc package bounds method names.
func (m *Metrics) RPCCall(method string, code int64, _ time.Duration) {
	m.rpcCalls.WithLabelValues(method, strconv.FormatInt(code, 10)).Inc()
}

// StorageError counts a failed storage operation; op is one of a fixed set.
func (m *Metrics) StorageError(op string) {
	m.storageErrors.WithLabelValues(op).Inc()
}
