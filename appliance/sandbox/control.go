package sandbox

import (
	"encoding/json"
	"io"
	"net/http"
	"time"
)

// controlPrefix is where scripts driving a real binary reach the methods
// tests call directly. Control requests are not counted and never faulted.
const controlPrefix = "_control/"

// faultRequest is the body of POST _control/fault.
type faultRequest struct {
	Endpoint  string `json:"endpoint"`
	LatencyMS int64  `json:"latency_ms"`
	Hang      bool   `json:"hang"`
	Status    int    `json:"status"`
	Errcode   int    `json:"errcode"`
	Errmsg    string `json:"errmsg"`
	Malformed bool   `json:"malformed"`
	Times     int    `json:"times"`
}

// controlMethods lists the controls and the method each takes; the ones
// that change state need POST so a crawler or a prefetching browser
// cannot trigger them.
var controlMethods = map[string]string{
	"stats":  http.MethodGet,
	"users":  http.MethodGet,
	"fault":  http.MethodPost,
	"clear":  http.MethodPost,
	"expire": http.MethodPost,
	"reset":  http.MethodPost,
}

// serveControl serves _control/: stats and users (GET); fault, clear,
// expire and reset (POST).
func (s *Sandbox) serveControl(w http.ResponseWriter, r *http.Request, name string) {
	method, ok := controlMethods[name]
	if !ok {
		http.Error(w, "sandbox: no such control", http.StatusNotFound)
		return
	}
	if r.Method != method {
		w.Header().Set("Allow", method)
		http.Error(w, "sandbox: use "+method, http.StatusMethodNotAllowed)
		return
	}
	switch name {
	case "stats":
		writeJSON(w, ctypeJSON, struct {
			Counts map[string]int `json:"counts"`
		}{s.Counts()})
	case "users":
		writeJSON(w, ctypeJSON, s.Users())
	case "fault":
		var req faultRequest
		dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
		dec.DisallowUnknownFields() // a misspelt field would silently mean "no fault"
		if err := dec.Decode(&req); err != nil {
			http.Error(w, "sandbox: bad fault: "+err.Error(), http.StatusBadRequest)
			return
		}
		if _, ok := s.routes[req.Endpoint]; !ok && req.Endpoint != "" {
			http.Error(w, "sandbox: unknown endpoint "+req.Endpoint, http.StatusBadRequest)
			return
		}
		if req.LatencyMS < 0 || req.Times < 0 || req.Status != 0 && (req.Status < 100 || req.Status > 599) {
			http.Error(w, "sandbox: bad fault values", http.StatusBadRequest)
			return
		}
		s.SetFault(req.Endpoint, Fault{
			Latency:   time.Duration(req.LatencyMS) * time.Millisecond,
			Hang:      req.Hang,
			Status:    req.Status,
			Errcode:   req.Errcode,
			Errmsg:    req.Errmsg,
			Malformed: req.Malformed,
			Times:     req.Times,
		})
		writeJSON(w, ctypeJSON, okAnswer)
	case "clear":
		s.ClearFaults()
		writeJSON(w, ctypeJSON, okAnswer)
	case "expire":
		s.ExpireTokens()
		writeJSON(w, ctypeJSON, okAnswer)
	case "reset":
		s.ResetCounts()
		writeJSON(w, ctypeJSON, okAnswer)
	}
}
