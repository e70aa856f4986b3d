package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"time"

	"github.com/100steps/wxappliance/appliance/sandbox"
)

// returnPath is the page the login returns to: never requested, since
// the session cookie is set by the redirect to it.
const returnPath = "/bench-return"

// login logs a browser in as the sandbox user openid through the
// appliance at base, wherever its fake WeChat is (its own /sandbox or one
// served alone), and returns the value of the session cookie.
func login(base, openid string) (string, error) {
	jar, _ := cookiejar.New(nil)
	stop := errors.New("returned")
	c := &http.Client{Jar: jar, Timeout: 30 * time.Second, CheckRedirect: func(req *http.Request, _ []*http.Request) error {
		if req.URL.Path == returnPath {
			return stop
		}
		return nil
	}}
	// /auth -> the fake WeChat's authorize page, with a link per user.
	resp, err := c.Get(base + "/auth?state=" + url.QueryEscape(base+returnPath))
	if err != nil {
		return "", err
	}
	page, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("authorize page: %d %v", resp.StatusCode, err)
	}
	link, ok := sandbox.UserLink(page, openid)
	if !ok {
		return "", fmt.Errorf("no link for %s on the authorize page", openid)
	}
	target, err := resp.Request.URL.Parse(link)
	if err != nil {
		return "", err
	}
	// The link -> /auth/code, which sets the cookie -> the return page.
	resp, err = c.Get(target.String())
	if resp != nil {
		resp.Body.Close()
	}
	if err != nil && !errors.Is(err, stop) {
		return "", err
	}
	u, _ := url.Parse(base)
	for _, ck := range jar.Cookies(u) {
		if ck.Name == "wxappliance_session" {
			return ck.Value, nil
		}
	}
	return "", errors.New("no session cookie after login")
}
