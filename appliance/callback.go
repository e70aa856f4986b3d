package appliance

import (
	"errors"
	"io"
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
	var late callback.LateSender
	if cb.LateReply == LateReplyCustomMessage {
		late = &customSender{app: a.app, log: log, observe: a.ops.lateReply}
	}
	return callback.New(store, d, callback.Config{
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
