package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

func tokenQuery() url.Values {
	return url.Values{"grant_type": {"client_credential"}, "appid": {DefaultAppID}, "secret": {DefaultAppSecret}}
}

func TestCounts(t *testing.T) {
	e := newEnv(t)
	e.appToken()
	e.appToken()
	e.get("cgi-bin/token", url.Values{"grant_type": {"nope"}}) // failed calls count too
	e.get("", nil)                                             // the index is not an endpoint
	e.get("_control/stats", nil)

	if n := e.sb.Count("cgi-bin/token"); n != 3 {
		t.Fatalf("Count(cgi-bin/token) = %d, want 3", n)
	}
	counts := e.sb.Counts()
	if len(counts) != 1 || counts["cgi-bin/token"] != 3 {
		t.Fatalf("Counts() = %v", counts)
	}
	counts["cgi-bin/token"] = 100 // a copy
	if e.sb.Count("cgi-bin/token") != 3 {
		t.Fatal("Counts() returned the live map")
	}
	e.sb.ResetCounts()
	if n := e.sb.Count("cgi-bin/token"); n != 0 {
		t.Fatalf("after ResetCounts: %d", n)
	}
}

func TestFaultStatusTimes(t *testing.T) {
	e := newEnv(t)
	e.sb.SetFault("cgi-bin/token", Fault{Status: http.StatusBadGateway, Times: 2})
	for i := range 2 {
		a := e.get("cgi-bin/token", tokenQuery())
		if a.Status != http.StatusBadGateway || !strings.Contains(string(a.Body), "502") {
			t.Fatalf("call %d: status %d %q", i, a.Status, a.Body)
		}
	}
	e.appToken() // the fault cleared itself
	if n := e.sb.Count("cgi-bin/token"); n != 3 {
		t.Errorf("faulted calls not counted: %d", n)
	}
}

func TestFaultErrcode(t *testing.T) {
	e := newEnv(t)
	e.sb.SetFault("cgi-bin/token", Fault{Errcode: 45009})
	a := e.get("cgi-bin/token", tokenQuery())
	if string(a.Body) != `{"errcode":45009,"errmsg":"reach max api daily quota limit"}` || a.Header.Get("Content-Type") != "text/plain" {
		t.Fatalf("45009 fault: %q %s", a.Header.Get("Content-Type"), a.Body)
	}
	e.sb.SetFault("sns/userinfo", Fault{Errcode: -1, Times: 1})
	b := e.get("sns/userinfo", nil)
	wantErr(t, b, -1)
	if b.json(t)["errmsg"] != "system error" || b.Header.Get("Content-Type") != "application/json; encoding=utf-8" {
		t.Fatalf("-1 fault: %q %s", b.Header.Get("Content-Type"), b.Body)
	}
	wantErr(t, e.get("sns/userinfo", nil), 41001) // Times: 1 is used up

	// Until ClearFaults when Times is 0.
	wantErr(t, e.get("cgi-bin/token", tokenQuery()), 45009)
	e.sb.ClearFaults()
	e.appToken()
}

func TestFaultMalformed(t *testing.T) {
	e := newEnv(t)
	e.sb.SetFault("cgi-bin/token", Fault{Malformed: true, Times: 1})
	a := e.get("cgi-bin/token", tokenQuery())
	var v any
	if a.Status != http.StatusOK || json.Unmarshal(a.Body, &v) == nil {
		t.Fatalf("malformed fault: %d %q", a.Status, a.Body)
	}
}

func TestFaultLatency(t *testing.T) {
	e := newEnv(t)
	e.sb.SetFault("cgi-bin/token", Fault{Latency: 150 * time.Millisecond, Times: 1})
	start := time.Now()
	e.appToken() // answered normally, late
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Fatalf("answered after %v", d)
	}
	start = time.Now()
	e.appToken()
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("latency did not clear: %v", d)
	}

	// Latency combined with an error: late, then the error.
	e.sb.SetFault("cgi-bin/token", Fault{Latency: 50 * time.Millisecond, Errcode: -1})
	start = time.Now()
	wantErr(t, e.get("cgi-bin/token", tokenQuery()), -1)
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Errorf("latency+errcode answered after %v", d)
	}
}

// returned wraps h to report, each time ServeHTTP returns, whether it
// wrote anything.
func returned(h http.Handler) (http.Handler, <-chan bool) {
	done := make(chan bool, 10)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &writeRecorder{ResponseWriter: w}
		h.ServeHTTP(rec, r)
		done <- rec.wrote
	}), done
}

type writeRecorder struct {
	http.ResponseWriter
	wrote bool
}

func (w *writeRecorder) WriteHeader(code int) { w.wrote = true; w.ResponseWriter.WriteHeader(code) }

func (w *writeRecorder) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

func TestFaultHangAndLatencyEndWithClient(t *testing.T) {
	for _, f := range []Fault{{Hang: true}, {Latency: time.Hour}} {
		sb := New(Options{})
		h, done := returned(sb)
		srv := httptest.NewServer(h)
		sb.SetFault("cgi-bin/token", f)

		client := &http.Client{Timeout: 100 * time.Millisecond}
		start := time.Now()
		_, err := client.Get(srv.URL + "/cgi-bin/token?" + tokenQuery().Encode())
		if err == nil {
			t.Fatalf("%+v: got an answer", f)
		}
		select {
		case wrote := <-done:
			if wrote {
				t.Errorf("%+v: answered after the client gave up", f)
			}
		case <-time.After(3 * time.Second):
			t.Fatalf("%+v: handler still running after the client gave up", f)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("%+v: took %v", f, d)
		}
		srv.Close()
	}
}

func TestFaultHangContext(t *testing.T) {
	sb := New(Options{})
	sb.SetFault("", Fault{Hang: true})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	r := httptest.NewRequestWithContext(ctx, "GET", "/sns/auth", nil)
	w := httptest.NewRecorder()
	sb.ServeHTTP(w, r) // returns only because ctx ends
	if !errors.Is(ctx.Err(), context.DeadlineExceeded) || w.Body.Len() != 0 {
		t.Fatalf("hang wrote %q (ctx %v)", w.Body, ctx.Err())
	}
}

func TestFaultGlobal(t *testing.T) {
	e := newEnv(t)
	e.sb.SetFault("", Fault{Status: http.StatusServiceUnavailable})
	e.sb.SetFault("sns/auth", Fault{Errcode: 45011})
	for _, p := range []string{"cgi-bin/token", "sns/userinfo", "cgi-bin/media/get", "connect/oauth2/authorize"} {
		if a := e.get(p, nil); a.Status != http.StatusServiceUnavailable {
			t.Errorf("%s: status %d under the global fault", p, a.Status)
		}
	}
	wantErr(t, e.get("sns/auth", nil), 45011) // its own fault wins
	for _, p := range []string{"", "_control/stats", "_files/" + strings.TrimPrefix(VideoPath, filesPrefix)} {
		if a := e.get(p, nil); a.Status != http.StatusOK {
			t.Errorf("%q: status %d, want it unaffected", p, a.Status)
		}
	}
	e.sb.ClearFaults()
	e.appToken()
}
