package appliance

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"sync"

	"github.com/100steps/wxappliance/appliance/wire"
)

// envelope is the error body of every browser route, as the service this
// one replaces answered it: {"status": N, "msg": "...", "data": null}.
type envelope struct {
	Status int    `json:"status"`
	Msg    string `json:"msg"`
	Data   any    `json:"data"`
	// Hint is for the developer reading the answer in the browser's
	// network panel; frontends go by status and msg.
	Hint string `json:"hint,omitempty"`
}

// badRequest is a malformed request, with msg shown to the browser.
func badRequest(msg string, err error) error {
	return wire.Errorf(wire.Invalid, msg, err)
}

// writeError answers err in the envelope, as wire classifies it, and logs
// what the browser does not see.
func writeError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		// The browser left; nobody reads the answer.
		log.Debug("client went away", "path", r.URL.Path)
		return
	}
	kind, msg := wire.Classify(err)
	status := kind.Status()
	level := slog.LevelInfo
	switch {
	case wire.Reported(err):
		level = slog.LevelDebug
	case status >= 500:
		level = slog.LevelWarn
	}
	log.Log(r.Context(), level, "request failed", "path", r.URL.Path, "status", status, "err", err)
	env := envelope{Status: status, Msg: msg}
	if e, ok := errors.AsType[*wire.Error](err); ok {
		env.Hint = e.Hint
	}
	writeJSON(w, status, env)
}

func writeEnvelope(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, envelope{Status: status, Msg: msg})
}

// writeJSON writes v without HTML escaping, so URLs keep their '&'. The
// buffer and encoder are reused: every JSON answer of every route comes
// through here.
func writeJSON(w http.ResponseWriter, status int, v any) {
	je := jsonEncoders.Get().(*jsonEncoder)
	defer je.release()
	if err := je.enc.Encode(v); err != nil {
		status = http.StatusInternalServerError
		je.buf.Reset()
		je.buf.WriteString(`{"status":500,"msg":"` + wire.MsgServerError + `","data":null}` + "\n")
	}
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(je.buf.Bytes())
}

type jsonEncoder struct {
	buf bytes.Buffer
	enc *json.Encoder
}

var jsonEncoders = sync.Pool{New: func() any {
	je := &jsonEncoder{}
	je.enc = json.NewEncoder(&je.buf)
	je.enc.SetEscapeHTML(false)
	return je
}}

// release returns je to the pool, unless an unusually large answer grew
// its buffer: the pool would keep that memory alive.
func (je *jsonEncoder) release() {
	if je.buf.Cap() > 64<<10 {
		return
	}
	je.buf.Reset()
	jsonEncoders.Put(je)
}

// writeRawObject passes a JSON object WeChat sent through unchanged, so
// every field, Chinese and emoji included, reaches the browser as WeChat
// wrote it. Anything else is not written but returned as an error.
func writeRawObject(w http.ResponseWriter, raw json.RawMessage) error {
	raw, err := wire.RawObject(raw)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	w.Write(raw)
	return nil
}
