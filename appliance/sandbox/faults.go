package sandbox

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strconv"
	"time"
)

// Fault makes an endpoint misbehave. The fields combine in this order:
// Latency delays the answer; then Hang, Status, Errcode or Malformed (the
// first set) replaces it. A Fault with only Latency delays the normal
// answer.
type Fault struct {
	// Latency is slept before answering; the request is dropped if its
	// context ends first.
	Latency time.Duration
	// Hang never answers: the handler returns only when the request's
	// context is done (the client gave up or the server shut down).
	Hang bool
	// Status answers this HTTP status with a short text body.
	Status int
	// Errcode answers HTTP 200 {"errcode":Errcode,"errmsg":...}, e.g. -1
	// (system error) or 45009 (daily quota reached).
	Errcode int
	// Errmsg replaces WeChat's text for Errcode, e.g. to name another IP
	// in a 40164.
	Errmsg string
	// Malformed answers HTTP 200 with a truncated JSON body.
	Malformed bool
	// Times is how many requests the fault applies to before clearing
	// itself; 0 keeps it until ClearFaults.
	Times int
}

// SetFault installs f on endpoint (a path without the leading slash, e.g.
// "cgi-bin/token"), replacing any fault there. The endpoint "" applies to
// every API endpoint that has no fault of its own; the index page,
// _control/ and _files/ are never faulted.
func (s *Sandbox) SetFault(endpoint string, f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults[endpoint] = &f
	s.log.Info("sandbox: fault set", "endpoint", endpoint, "fault", f)
}

// ClearFaults removes every fault.
func (s *Sandbox) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.faults)
}

// countAndFault counts a request to endpoint and returns the fault that
// applies to it, if any, consuming one of its Times.
func (s *Sandbox) countAndFault(endpoint string) *Fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.counts[endpoint]++
	key := endpoint
	f, ok := s.faults[key]
	if !ok {
		key = ""
		if f, ok = s.faults[key]; !ok {
			return nil
		}
	}
	applied := *f
	if f.Times > 0 {
		f.Times--
		if f.Times == 0 {
			delete(s.faults, key)
		}
	}
	return &applied
}

// applyFault carries out f and reports whether it answered (or dropped)
// the request, leaving nothing for the normal handler to do.
func (s *Sandbox) applyFault(w http.ResponseWriter, r *http.Request, endpoint string, rt route, f Fault) bool {
	// net/http notices a client hanging up only once the request body has
	// been read to its end; until then a hung handler would wait forever.
	body, _ := io.ReadAll(io.LimitReader(r.Body, maxFaultBody))
	r.Body = io.NopCloser(bytes.NewReader(body))
	// A hang still ends eventually, so a test that forgets to give up
	// cannot wedge the server's Close.
	ctx, cancel := context.WithTimeout(r.Context(), maxHang)
	defer cancel()
	if f.Latency > 0 {
		t := time.NewTimer(f.Latency)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return true
		}
	}
	switch {
	case f.Hang:
		<-ctx.Done()
	case f.Status != 0:
		http.Error(w, "sandbox: injected fault: "+strconv.Itoa(f.Status)+" "+http.StatusText(f.Status), f.Status)
	case f.Errcode != 0 && f.Errmsg != "":
		writeJSON(w, rt.ctype, apiError{Errcode: f.Errcode, Errmsg: f.Errmsg})
	case f.Errcode != 0:
		writeErr(w, rt.ctype, f.Errcode)
	case f.Malformed:
		// Cut mid-string, the way a proxy that drops the connection
		// leaves a body.
		body := `{"errcode":0,"errmsg":"ok","access_token":"SBXtrunc`
		w.Header().Set("Content-Type", rt.ctype)
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write([]byte(body))
	default:
		return false
	}
	s.log.Debug("sandbox: fault applied", "endpoint", endpoint)
	return true
}

const (
	maxFaultBody = 1 << 20
	maxHang      = 2 * time.Minute
)
