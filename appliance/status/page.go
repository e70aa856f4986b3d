package status

import (
	"bytes"
	_ "embed"
	"fmt"
	"html/template"
	"net/http"
	"sort"
	"time"

	"github.com/100steps/wxappliance/callback"
)

//go:embed page.html
var pageHTML string

var pageTemplate = template.Must(template.New("status").Parse(pageHTML))

// page is what the template renders: strings ready to show.
type page struct {
	Version, Started, Uptime, Now string
	AppID                         string
	Sandbox                       bool
	Problems                      []string

	Credentials []credView

	Callback       bool
	Outcomes       []countView
	Messages       []msgView
	CallbackRecent int

	RPC       bool
	Conns     []connView
	RPCCalls  int
	RPCFailed int

	Storage storageView

	Calls, Failed int
	Upstream      []upstreamView
}

type credView struct {
	Name, API            string
	Held                 bool
	Left, LeftClass      string
	Age, Refresh, Expiry string
	Fetches              int
	Err                  *errView
}

type errView struct {
	When, Errcode, Errmsg, Hint, IP string
	Resolved                        bool
}

type countView struct {
	Name  string
	Count int
}

type msgView struct {
	When, Type, Event, Mode, Outcome, Why string
}

type connView struct {
	Key, Remote, Since string
	Subscribed         bool
}

type storageView struct {
	Backend, Dir      string
	LSM, VLog, Total  string
	Free, FSTotal     string
	FreeClass, Errors string
	HasSize, HasSpace bool
}

type upstreamView struct {
	When, API, Errcode string
}

// ServeHTTP renders the page.
func (s *Status) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var buf bytes.Buffer
	if err := pageTemplate.Execute(&buf, s.view()); err != nil {
		http.Error(w, "status page: "+err.Error(), http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	// Inline styles only; nothing is loaded from anywhere, no script runs.
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src data:")
	w.Write(buf.Bytes())
}

// view reads the services' state, then what the hooks collected.
func (s *Status) view() page {
	s.mu.Lock()
	src := s.src
	s.mu.Unlock()
	now := s.now()

	// The services are asked without holding mu: they may call the hooks.
	type peeked struct {
		c    Credential
		tok  tokenTimes
		held bool
	}
	var creds []peeked
	for _, c := range src.Credentials {
		tok, ok := c.Peek()
		creds = append(creds, peeked{c, tokenTimes{tok.ExpiresAt, tok.RefreshAt, tok.FetchedAt}, ok})
	}
	p := page{
		Version:  s.version,
		Started:  s.started.Format(time.DateTime + " MST"),
		Uptime:   human(now.Sub(s.started)),
		Now:      now.Format(time.DateTime + " MST"),
		AppID:    src.AppID,
		Sandbox:  src.Sandbox,
		Callback: src.Callback,
		RPC:      src.RPC != nil,
	}
	if src.RPC != nil {
		for _, c := range src.RPC() {
			p.Conns = append(p.Conns, connView{Key: c.Key, Remote: c.Remote, Since: ago(now, c.Since), Subscribed: c.Subscribed})
		}
	}
	p.Storage = storageOf(src.Storage)

	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range creds {
		v := s.credView(c.c, c.tok, c.held, now)
		if !v.Held {
			p.Problems = append(p.Problems, v.Name+": none held")
		}
		if v.Err != nil && !v.Err.Resolved {
			p.Problems = append(p.Problems, v.Name+": the last fetch failed ("+v.Err.Errcode+")")
		}
		p.Credentials = append(p.Credentials, v)
	}
	for _, o := range []callback.Outcome{callback.OutcomeReplied, callback.OutcomeEmpty, callback.OutcomeDuplicate, callback.OutcomeLate, callback.OutcomeRefused} {
		p.Outcomes = append(p.Outcomes, countView{string(o), s.outcomes[o]})
	}
	for _, m := range s.messages.newestFirst() {
		p.Messages = append(p.Messages, msgView{
			When: ago(now, m.at), Type: m.msgType, Event: m.event, Mode: m.mode, Outcome: string(m.outcome), Why: m.what,
		})
	}
	p.CallbackRecent = Recent
	p.RPCCalls, p.RPCFailed = s.rpcCalls, s.rpcFailed
	p.Calls, p.Failed = s.calls, s.failed
	for _, u := range s.upstream.newestFirst() {
		p.Upstream = append(p.Upstream, upstreamView{When: ago(now, u.at), API: u.api, Errcode: u.errcode})
	}
	var ops []string
	for op := range s.storeErrs {
		ops = append(ops, op)
	}
	sort.Strings(ops)
	for _, op := range ops {
		if p.Storage.Errors != "" {
			p.Storage.Errors += ", "
		}
		p.Storage.Errors += fmt.Sprintf("%s: %d", op, s.storeErrs[op])
	}
	if p.Storage.Errors != "" {
		p.Problems = append(p.Problems, "storage errors since start ("+p.Storage.Errors+")")
	}
	if p.Storage.FreeClass == "bad" {
		p.Problems = append(p.Problems, "storage: little free space ("+p.Storage.Free+")")
	}
	return p
}

// tokenTimes is what the page may know of a token: never its value.
type tokenTimes struct {
	expiresAt, refreshAt, fetchedAt time.Time
}

func (s *Status) credView(c Credential, tok tokenTimes, held bool, now time.Time) credView {
	v := credView{Name: c.Name, API: c.API, Held: held, Left: "none held", LeftClass: "bad"}
	if held {
		left := tok.expiresAt.Sub(now)
		v.Left, v.Expiry = human(left), tok.expiresAt.Format(time.DateTime)
		v.LeftClass = "ok"
		switch {
		case left < 2*time.Minute:
			v.LeftClass = "bad"
		case !now.Before(tok.refreshAt):
			v.LeftClass = "warn" // the refresh is overdue
		}
		v.Refresh = "due now"
		if d := tok.refreshAt.Sub(now); d > 0 {
			v.Refresh = "in " + human(d)
		}
		v.Age = "unknown (stored by an older version)"
		if !tok.fetchedAt.IsZero() {
			v.Age = human(now.Sub(tok.fetchedAt))
		}
	}
	st := s.creds[c.Name]
	if st == nil {
		return v
	}
	v.Fetches = st.fetches
	if !st.lastErrAt.IsZero() {
		text, ip := hint(st.lastErr)
		v.Err = &errView{
			When:     ago(now, st.lastErrAt),
			Errcode:  st.lastErr.errcode,
			Errmsg:   st.lastErr.errmsg,
			Hint:     text,
			IP:       ip,
			Resolved: st.lastOK.After(st.lastErrAt),
		}
	}
	return v
}

func storageOf(st Storage) storageView {
	v := storageView{Backend: st.Backend, Dir: st.Dir}
	if st.Size != nil {
		lsm, vlog := st.Size()
		v.HasSize = true
		v.LSM, v.VLog, v.Total = bytesize(lsm), bytesize(vlog), bytesize(lsm+vlog)
	}
	if st.Space != nil {
		if free, total, err := st.Space(); err == nil {
			v.HasSpace = true
			v.Free, v.FSTotal = bytesize(free), bytesize(total)
			v.FreeClass = "ok"
			switch {
			case free < 256<<20 || total > 0 && free*20 < total:
				v.FreeClass = "bad"
			case total > 0 && free*10 < total:
				v.FreeClass = "warn"
			}
		}
	}
	return v
}

// human writes d the way an operator reads it at a glance: "1h 52m",
// "4m 10s", "12s", "3d 4h".
func human(d time.Duration) string {
	sign := ""
	if d < 0 {
		sign, d = "-", -d
	}
	d = d.Round(time.Second)
	days, hours, mins, secs := int(d/(24*time.Hour)), int(d/time.Hour)%24, int(d/time.Minute)%60, int(d/time.Second)%60
	switch {
	case days > 0:
		return fmt.Sprintf("%s%dd %dh", sign, days, hours)
	case hours > 0:
		return fmt.Sprintf("%s%dh %dm", sign, hours, mins)
	case mins > 0:
		return fmt.Sprintf("%s%dm %ds", sign, mins, secs)
	}
	return fmt.Sprintf("%s%ds", sign, secs)
}

func ago(now, t time.Time) string {
	return human(now.Sub(t)) + " ago"
}

func bytesize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
