package main

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

var userLink = regexp.MustCompile(`id="user-oSBX_zhangsan"[^>]*href="([^"]+)"`)

// login logs a browser in as a sandbox user and returns the session id.
func login(base string) (string, error) {
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 10 * time.Second}
	page := base + "/sandbox/demo"
	resp, err := c.Get(base + "/auth?state=" + url.QueryEscape(page))
	if err != nil {
		return "", err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := userLink.FindSubmatch(body)
	if m == nil {
		return "", fmt.Errorf("no user link on the authorize page (%d)", resp.StatusCode)
	}
	target, err := resp.Request.URL.Parse(html.UnescapeString(string(m[1])))
	if err != nil {
		return "", err
	}
	resp, err = c.Get(target.String())
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	u, _ := url.Parse(base)
	for _, ck := range jar.Cookies(u) {
		if ck.Name == "wxappliance_session" {
			return ck.Value, nil
		}
	}
	return "", fmt.Errorf("no session cookie after login")
}

func sandboxCounts(base string) (map[string]int, error) {
	resp, err := http.Get(base + "/sandbox/_control/stats")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var stats struct {
		Counts map[string]int `json:"counts"`
	}
	return stats.Counts, json.NewDecoder(resp.Body).Decode(&stats)
}
