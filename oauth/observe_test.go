package oauth_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/100steps/wxappliance/oauth"
)

type observedCall struct {
	api, errcode string
}

// Each call ends in one observation naming its path and its outcome in
// the bounded words of oauth.Errcode.
func TestClientObserve(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			w.Write([]byte(`{"errcode":0,"errmsg":"ok"}`))
		case "/refused":
			w.Write([]byte(`{"errcode":40164,"errmsg":"invalid ip 203.0.113.7 ipv6 ::ffff:203.0.113.7, not in whitelist"}`))
		case "/down":
			http.Error(w, "bad gateway", http.StatusBadGateway)
		case "/garbled":
			w.Write([]byte(`{"errcode":0,"access_tok`))
		case "/hang":
			<-r.Context().Done()
		}
	}))
	defer srv.Close()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	unreachable := "http://" + closed.Addr().String()
	closed.Close()

	tests := []struct {
		name, base, path string
		timeout          time.Duration
		cancel           bool
		want             string
	}{
		{"success", srv.URL, "ok", 0, false, "0"},
		{"errcode", srv.URL, "refused", 0, false, "40164"},
		{"5xx", srv.URL, "down", 0, false, "http_5xx"},
		{"network", unreachable, "ok", 0, false, "network"},
		{"malformed", srv.URL, "garbled", 0, false, "malformed"},
		// The server never answers: the deadline ends the call, however
		// slow the machine.
		{"timeout", srv.URL, "hang", 50 * time.Millisecond, false, "timeout"},
		{"canceled", srv.URL, "ok", 0, true, "canceled"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			var got []observedCall
			c, err := oauth.NewClient(oauth.ClientConfig{
				BaseURL: tt.base, Timeout: 5 * time.Second,
				Observe: func(api, errcode string, d time.Duration) {
					mu.Lock()
					defer mu.Unlock()
					got = append(got, observedCall{api, errcode})
					if d < 0 {
						t.Errorf("negative duration %v", d)
					}
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			if tt.cancel {
				cancel()
			}
			defer cancel()
			callErr := c.CallJSON(ctx, oauth.Request{Path: tt.path, Timeout: tt.timeout}, nil)
			mu.Lock()
			defer mu.Unlock()
			if want := []observedCall{{tt.path, tt.want}}; len(got) != 1 || got[0] != want[0] {
				t.Fatalf("observed %v, want %v (call error: %v)", got, want, callErr)
			}
			if oauth.Errcode(callErr) != tt.want {
				t.Fatalf("Errcode(%v) = %q, want %q", callErr, oauth.Errcode(callErr), tt.want)
			}
		})
	}
}

func TestErrcodeOther(t *testing.T) {
	if got := oauth.Errcode(errors.New("a media writer failed")); got != "other" {
		t.Fatalf("Errcode = %q", got)
	}
}

// A fetch is observed with its outcome and WeChat's error, never the
// value; the stored record remembers when it was fetched.
func TestCredentialObserveFetch(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var mu sync.Mutex
	var seen []oauth.Fetched
	fail := true
	store := openStore(t, t.TempDir())
	cred := oauth.NewCredential(oauth.CredentialConfig{
		Name: "access_token", Key: "cred/t", Store: store,
		Now: func() time.Time { return now },
		Fetch: func(context.Context) (string, time.Duration, error) {
			if fail {
				return "", 0, &oauth.APIError{Code: 40125, Msg: "invalid appsecret", Path: "cgi-bin/stable_token"}
			}
			return "the-token-value", 2 * time.Hour, nil
		},
		ObserveFetch: func(f oauth.Fetched) {
			mu.Lock()
			defer mu.Unlock()
			seen = append(seen, f)
		},
	})
	if _, err := cred.Get(t.Context()); !oauth.HasCode(err, 40125) {
		t.Fatalf("Get: %v, want errcode 40125", err)
	}
	fail = false
	tok, err := cred.Get(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !tok.FetchedAt.Equal(now) {
		t.Fatalf("FetchedAt %v, want %v", tok.FetchedAt, now)
	}
	raw, err := store.Get(t.Context(), "cred/t")
	if err != nil {
		t.Fatal(err)
	}
	var stored oauth.Token
	if err := json.Unmarshal(raw, &stored); err != nil || !stored.FetchedAt.Equal(now) {
		t.Fatalf("stored %s (%v): no fetched_at", raw, err)
	}
	if peeked, ok := cred.Peek(); !ok || !peeked.FetchedAt.Equal(now) {
		t.Fatalf("Peek: %+v %v", peeked, ok)
	}

	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 2 {
		t.Fatalf("%d observations for 2 fetches", len(seen))
	}
	failed, fetched := seen[0], seen[1]
	if failed.Credential != "access_token" || !failed.At.Equal(now) || !failed.ExpiresAt.IsZero() || oauth.Errcode(failed.Err) != "40125" {
		t.Fatalf("failed fetch observed as %+v", failed)
	}
	if fetched.Err != nil || !fetched.ExpiresAt.Equal(now.Add(2*time.Hour)) {
		t.Fatalf("fetch observed as %+v", fetched)
	}
}
