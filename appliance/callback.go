package appliance

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/100steps/wxappliance/appliance/sandbox"
	"github.com/100steps/wxappliance/callback"
	"github.com/100steps/wxappliance/kv"
)

// The WeChat callback's HTTP transport. Package callback holds the protocol
// and knows nothing of HTTP; this file reads the request, calls it, and
// answers its errors in the envelope like every other route: WeChat reads
// only a 200's body, and people debugging with curl read the rest.

// newCallback builds the callback service; nil when callback.token is
// empty, which turns the callback off.
func (a *Appliance) newCallback(store kv.Store, now func() time.Time) (*callback.Service, error) {
	cb := a.cfg.Callback
	if cb.Token == "" {
		return nil, nil
	}
	d, err := callback.NewDispatcher(cb.Rules.rules())
	if err != nil {
		return nil, err
	}
	log := a.log.With("component", "callback")
	dedupe, err := a.dedupeStore(store, log)
	if err != nil {
		return nil, err
	}
	var late callback.LateSender
	if cb.LateReply == LateReplyCustomMessage {
		late = &customSender{app: a.app, log: log, observe: a.ops.lateReply}
	}
	return callback.New(dedupe, d, callback.Config{
		Token:                  cb.Token,
		AppID:                  a.cfg.WeChat.AppID,
		EncodingAESKey:         cb.EncodingAESKey,
		PreviousEncodingAESKey: cb.PreviousEncodingAESKey,
		ReplyTimeout:           cb.ReplyTimeout.D(),
		Late:                   late,
		LateWindow:             cb.LateReplyWindow.D(),
		TimestampWindow:        cb.TimestampWindow.D(),
		Instances:              a.instances(),
		Now:                    now,
		Logger:                 log,
		Observe:                a.ops.callbackMessage,
	})
}

// dedupeStore is where the callback keeps its dedupe records. On Badger,
// which this process alone holds, claims stay in memory and answers go to a
// journal beside the store (callback.LocalStore): a message costs one
// append instead of two Badger transactions, whose flushes and compactions
// halved the throughput as a load went on (BENCHMARKS.md). Several
// instances on Redis share the records through the store.
func (a *Appliance) dedupeStore(store kv.Store, log *slog.Logger) (callback.Store, error) {
	b, ok := a.store.(*kv.Badger)
	if !ok {
		return store, nil
	}
	j, err := b.Journal("callback")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n, err := callback.ImportAnswers(ctx, b, j)
	switch {
	case err != nil:
		// Only answers to retries of the last minutes are at stake.
		log.Warn("could not move the dedupe records of an earlier version", "err", err)
	case n > 0:
		log.Info("moved the dedupe records of an earlier version to the journal", "records", n)
	}
	return countingDedupe{Store: callback.LocalStore(j), count: countingStore{failed: a.ops.storageError}.count}, nil
}

// countingDedupe counts the failures of the callback's local dedupe
// records in the metrics, as countingStore does for the store's.
type countingDedupe struct {
	callback.Store
	count func(op string, err error)
}

func (s countingDedupe) Get(ctx context.Context, key string) ([]byte, error) {
	v, err := s.Store.Get(ctx, key)
	s.count("get", err)
	return v, err
}

func (s countingDedupe) PutIfAbsent(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	ok, err := s.Store.PutIfAbsent(ctx, key, value, ttl)
	s.count("put_if_absent", err)
	return ok, err
}

func (s countingDedupe) CompareAndSwap(ctx context.Context, key string, old, value []byte, ttl time.Duration) (bool, error) {
	ok, err := s.Store.CompareAndSwap(ctx, key, old, value, ttl)
	s.count("compare_and_swap", err)
	return ok, err
}

// sandboxCallbackTarget tells the sandbox's push page where and how to
// send. Serve points wechat.api_base at this process's /sandbox over
// loopback, so the callback is the same root plus callback.path; that way
// the push never leaves the machine, whatever server.base_url says.
func (a *Appliance) sandboxCallbackTarget() sandbox.CallbackTarget {
	if a.callback == nil {
		return sandbox.CallbackTarget{}
	}
	root := strings.TrimSuffix(a.cfg.WeChat.APIBase, "/sandbox")
	return sandbox.CallbackTarget{
		URL:            root + a.cfg.Callback.Path,
		Token:          a.cfg.Callback.Token,
		EncodingAESKey: a.cfg.Callback.EncodingAESKey,
	}
}

// callbackRoutes registers callback.path (when the callback is on) and the
// domain verification files (always: they prove the domain for JS-SDK and
// web login too).
func (a *Appliance) callbackRoutes(mux *http.ServeMux) {
	for name, content := range a.cfg.Callback.VerifyFiles {
		mux.Handle("GET /"+name, verifyFile(content))
	}
	if a.callback != nil {
		mux.HandleFunc(a.cfg.Callback.Path, a.serveCallback)
	}
}

// serveCallback answers GET (URL verification) and POST (messages and
// events) at callback.path.
func (a *Appliance) serveCallback(w http.ResponseWriter, r *http.Request) {
	q := callback.ParseQuery(r.URL.Query())
	switch r.Method {
	case http.MethodGet:
		echo, err := a.callback.Verify(q)
		if err != nil {
			a.callbackError(w, r, err)
			return
		}
		writeText(w, "text/plain; charset=utf-8", []byte(echo))
	case http.MethodPost:
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, callback.MaxBodyBytes))
		if _, tooLarge := errors.AsType[*http.MaxBytesError](err); err != nil && !tooLarge {
			err = badRequest("请求体读取失败", err)
		}
		if err != nil {
			a.callbackError(w, r, err)
			return
		}
		ans, err := a.callback.Handle(r.Context(), q, body)
		if err != nil {
			a.callbackError(w, r, err)
			return
		}
		writeText(w, ans.ContentType(), ans.Body)
	default:
		w.Header().Set("Allow", "GET, POST")
		writeEnvelope(w, http.StatusMethodNotAllowed, "不支持的请求方法")
	}
}

// callbackError answers err, telling the operator what to fix when it is
// the configuration.
func (a *Appliance) callbackError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, callback.ErrNoKey) {
		a.log.Error("encrypted callback message but callback.encoding_aes_key is not set: set it to the EncodingAESKey of WeChat's server configuration")
	}
	writeError(w, r, a.log, err)
}

// verifyFile serves a domain verification file's content.
func verifyFile(content string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeText(w, "text/plain; charset=utf-8", []byte(content))
	})
}

// writeText answers 200 with body as it is. nosniff keeps a browser from
// reading an echoed echostr as HTML.
func writeText(w http.ResponseWriter, contentType string, body []byte) {
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	w.Write(body)
}

// Callback is the callback service, nil when the callback is off. When RPC
// is on, buildRPC (rpc.go) makes the RPC server its subscriber.
func (a *Appliance) Callback() *callback.Service { return a.callback }
