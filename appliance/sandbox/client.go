package sandbox

import (
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"time"
)

// What tests and load programs do with a sandbox from outside: log a
// browser in through an appliance by picking a test user on the authorize
// page, and read the call counts.

var userLinkRe = regexp.MustCompile(`id="user-([^"]+)"[^>]*href="([^"]+)"`)

// UserLink finds the link that authorizes as openid on an authorize page.
func UserLink(page []byte, openid string) (string, bool) {
	for _, m := range userLinkRe.FindAllSubmatch(page, -1) {
		if string(m[1]) == openid {
			return html.UnescapeString(string(m[2])), true
		}
	}
	return "", false
}

// Login logs a new browser in through the appliance at base, as the test
// user openid, and returns the value of its session cookie.
func Login(base, openid string) (string, error) {
	return LoginWith(&http.Client{Timeout: 30 * time.Second}, base, openid)
}

// LoginWith is Login with the client given (its transport, say); a new
// cookie jar is set on it when it has none. The page the login returns to
// is not fetched: the appliance may have no sandbox of its own to serve
// it (several instances beside a standalone one).
func LoginWith(c *http.Client, base, openid string) (string, error) {
	if c.Jar == nil {
		c.Jar, _ = cookiejar.New(nil)
	}
	page := base + "/sandbox/demo"
	stopAtPage := *c
	stopAtPage.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if req.URL.String() == page {
			return http.ErrUseLastResponse
		}
		if len(via) >= 10 {
			return fmt.Errorf("stopped after %d redirects", len(via))
		}
		return nil
	}
	resp, err := stopAtPage.Get(base + "/auth?state=" + url.QueryEscape(page))
	if err != nil {
		return "", err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("authorize page: %d %v", resp.StatusCode, err)
	}
	link, ok := UserLink(body, openid)
	if !ok {
		return "", fmt.Errorf("no link for %s on the authorize page", openid)
	}
	target, err := resp.Request.URL.Parse(link)
	if err != nil {
		return "", err
	}
	// Redirects: confirm -> /auth/code, whose 302 to the page sets the
	// cookie in the jar once fully received.
	resp, err = stopAtPage.Get(target.String())
	if err != nil {
		return "", err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != page {
		return "", fmt.Errorf("login ended at %d %s", resp.StatusCode, resp.Request.URL)
	}
	u, _ := url.Parse(base)
	for _, ck := range c.Jar.Cookies(u) {
		if ck.Name == "wxappliance_session" {
			return ck.Value, nil
		}
	}
	return "", fmt.Errorf("no session cookie after login")
}

// Counts returns the calls per endpoint of the sandbox at root: an
// appliance's base URL plus "/sandbox", or a standalone sandbox's.
func Counts(root string) (map[string]int, error) {
	resp, err := http.Get(root + "/_control/stats")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var stats struct {
		Counts map[string]int `json:"counts"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&stats); err != nil {
		return nil, fmt.Errorf("sandbox stats: %w", err)
	}
	return stats.Counts, nil
}
