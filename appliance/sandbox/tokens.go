package sandbox

import (
	"encoding/json"
	"io"
	"net/http"
	"time"
)

// tokenAnswer is the answer of cgi-bin/token and cgi-bin/stable_token.
type tokenAnswer struct {
	AccessToken string `json:"access_token"`
	ExpiresIn   int64  `json:"expires_in"`
}

// checkClient validates client credentials the way cgi-bin/token does and
// returns 0 or the errcode to answer.
func (s *Sandbox) checkClient(grantType, appID, secret string) int {
	switch {
	case grantType != "client_credential":
		return 40002
	case appID == "":
		return 41002
	case secret == "":
		return 41004
	case appID != s.appID:
		return 40013
	case secret != s.secret:
		return 40125
	}
	return 0
}

// handleToken serves GET cgi-bin/token. Every call issues a new token; the
// previous ones keep working for five minutes (see checkTimeLocked).
func (s *Sandbox) handleToken(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if code := s.checkClient(q.Get("grant_type"), q.Get("appid"), q.Get("secret")); code != 0 {
		writeErr(w, ctypeText, code)
		return
	}
	s.mu.Lock()
	tok, c := s.issueLocked(claims{Kind: kindApp}, s.tokenTTL)
	s.state.appCurrent = c.IAT
	s.mu.Unlock()
	writeJSON(w, ctypeText, tokenAnswer{AccessToken: tok, ExpiresIn: seconds(s.tokenTTL)})
}

// handleStableToken serves POST cgi-bin/stable_token: the same token while
// it is valid, a new one when force_refresh is set. Stable tokens are
// independent of cgi-bin/token ones, as WeChat documents.
func (s *Sandbox) handleStableToken(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		writeErr(w, ctypeText, 43002)
		return
	}
	var req struct {
		GrantType    string `json:"grant_type"`
		AppID        string `json:"appid"`
		Secret       string `json:"secret"`
		ForceRefresh bool   `json:"force_refresh"`
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err != nil || json.Unmarshal(body, &req) != nil {
		writeErr(w, ctypeText, 47001)
		return
	}
	if code := s.checkClient(req.GrantType, req.AppID, req.Secret); code != 0 {
		writeErr(w, ctypeText, code)
		return
	}
	writeJSON(w, ctypeText, s.stableToken(req.ForceRefresh))
}

// stableToken returns the current stable token, issuing a new one when
// there is none, it is no longer valid, or force is set.
func (s *Sandbox) stableToken(force bool) tokenAnswer {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now().UnixNano()
	if !force && s.state.stableToken != "" {
		if c, ok := s.signer.parse(s.state.stableToken, kindStable); ok && s.checkTimeLocked(c, now) == 0 {
			return tokenAnswer{AccessToken: s.state.stableToken, ExpiresIn: remaining(c, now)}
		}
	}
	tok, c := s.issueLocked(claims{Kind: kindStable}, s.tokenTTL)
	s.state.stableToken = tok
	s.state.stableCurrent = c.IAT
	return tokenAnswer{AccessToken: tok, ExpiresIn: seconds(s.tokenTTL)}
}

// appToken validates the access_token query parameter of a cgi-bin API and
// answers the error itself when it is not usable.
func (s *Sandbox) appToken(w http.ResponseWriter, r *http.Request, ctype string) bool {
	tok := r.URL.Query().Get("access_token")
	if tok == "" {
		writeErr(w, ctype, 41001)
		return false
	}
	if _, code := s.check(tok, kindApp, kindStable); code != 0 {
		writeErr(w, ctype, code)
		return false
	}
	return true
}

// handleGetTicket serves GET cgi-bin/ticket/getticket. Like WeChat, it
// returns the same ticket while it is valid, whichever token asks.
func (s *Sandbox) handleGetTicket(w http.ResponseWriter, r *http.Request) {
	if !s.appToken(w, r, ctypeText) {
		return
	}
	typ := r.URL.Query().Get("type")
	if typ != "jsapi" && typ != "wx_card" {
		writeErr(w, ctypeText, 40097)
		return
	}
	tok, expiresIn := s.ticket(typ)
	writeJSON(w, ctypeText, struct {
		Errcode   int    `json:"errcode"`
		Errmsg    string `json:"errmsg"`
		Ticket    string `json:"ticket"`
		ExpiresIn int64  `json:"expires_in"`
	}{0, "ok", tok, expiresIn})
}

// ticket returns the current ticket of typ and its remaining seconds,
// issuing a new one when there is none or it is no longer valid.
func (s *Sandbox) ticket(typ string) (string, int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now().UnixNano()
	tok := s.state.tickets[typ]
	c, ok := s.signer.parse(tok, kindTicket)
	if !ok || s.checkTimeLocked(c, now) != 0 {
		tok, c = s.issueLocked(claims{Kind: kindTicket, Type: typ}, s.tokenTTL)
		s.state.tickets[typ] = tok
	}
	return tok, remaining(c, now)
}

func seconds(d time.Duration) int64 { return int64(d / time.Second) }

// remaining is the whole seconds c has left at now.
func remaining(c claims, now int64) int64 {
	return max(0, (c.Exp-now)/int64(time.Second))
}
