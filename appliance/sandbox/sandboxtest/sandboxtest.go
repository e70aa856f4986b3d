// Package sandboxtest puts the sandbox behind a test server with a client
// of it: the fake WeChat that the services' tests call.
package sandboxtest

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/100steps/wxappliance/appliance/sandbox"
	"github.com/100steps/wxappliance/kv"
	"github.com/100steps/wxappliance/oauth"
)

// Options configures New. The zero value is a default sandbox and a client
// with a two-second deadline.
type Options struct {
	Sandbox sandbox.Options
	// Routes answer these paths ("/cgi-bin/media/get") instead of the
	// sandbox, so a test controls exactly what WeChat says there.
	Routes map[string]http.HandlerFunc
	// Timeout is the client's deadline per call; zero means two seconds.
	Timeout time.Duration
}

// WeChat is a sandbox served over HTTP until the test ends, and a client
// whose base URL is it.
type WeChat struct {
	Sandbox *sandbox.Sandbox
	URL     string
	Client  *oauth.Client
}

// New starts the fake WeChat for t.
func New(t testing.TB, opts Options) *WeChat {
	t.Helper()
	sb := sandbox.New(opts.Sandbox)
	var h http.Handler = sb
	if len(opts.Routes) > 0 {
		mux := http.NewServeMux()
		mux.Handle("/", sb)
		for path, route := range opts.Routes {
			mux.HandleFunc(path, route)
		}
		h = mux
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	if opts.Timeout == 0 {
		opts.Timeout = 2 * time.Second
	}
	client, err := oauth.NewClient(oauth.ClientConfig{BaseURL: srv.URL, Timeout: opts.Timeout})
	if err != nil {
		t.Fatal(err)
	}
	return &WeChat{Sandbox: sb, URL: srv.URL, Client: client}
}

// App is the account's access_token holder on store, with the sandbox's
// credentials.
func (w *WeChat) App(store kv.Store) *oauth.App {
	return oauth.NewApp(w.Client, store, oauth.AppConfig{AppID: w.Sandbox.AppID(), Secret: sandbox.DefaultAppSecret})
}
