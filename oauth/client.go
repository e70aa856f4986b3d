package oauth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// maxJSONBody caps what is read of a JSON answer; WeChat's largest JSON
// answers (user lists of 10,000 openids) stay well under it.
const maxJSONBody = 4 << 20

// ClientConfig configures a Client.
type ClientConfig struct {
	// BaseURL is the primary API host, e.g. https://api.weixin.qq.com.
	BaseURL string
	// Fallbacks are tried in order when the primary cannot be reached or
	// answers a 5xx, e.g. https://api2.weixin.qq.com.
	Fallbacks []string
	// Timeout bounds every call, failover and the busy retry included.
	Timeout time.Duration
	// BusyBackoff is the pause before retrying an errcode -1 answer.
	BusyBackoff time.Duration
	// HTTPClient defaults to a client with its own transport; its Timeout is
	// not used, the per-call deadline is.
	HTTPClient *http.Client
	Logger     *slog.Logger
	// Observe, when set, is told of every call once it ends: its Path, the
	// outcome as Errcode names it, and how long the whole call took,
	// failover and busy retry included. Nil means nobody listens.
	Observe func(api, errcode string, d time.Duration)
}

// Client calls WeChat's HTTP APIs. It knows nothing about credentials: the
// caller puts access_token or secrets in Request.Query.
type Client struct {
	bases   []*url.URL
	timeout time.Duration
	backoff time.Duration
	http    *http.Client
	log     *slog.Logger
	observe func(api, errcode string, d time.Duration)
}

// Request is one upstream call. Path is relative to the API base, without a
// leading slash, e.g. "cgi-bin/user/info".
type Request struct {
	Method string // GET when empty
	Path   string
	Query  url.Values
	Body   []byte // sent as application/json when not nil
	// Timeout overrides the client's deadline for calls that move more data,
	// such as media downloads.
	Timeout time.Duration
}

// NewClient checks cfg and returns a Client.
func NewClient(cfg ClientConfig) (*Client, error) {
	if cfg.Timeout <= 0 {
		return nil, errors.New("oauth: client timeout must be positive")
	}
	c := &Client{timeout: cfg.Timeout, backoff: cfg.BusyBackoff, http: cfg.HTTPClient, log: cfg.Logger, observe: cfg.Observe}
	for _, raw := range append([]string{cfg.BaseURL}, cfg.Fallbacks...) {
		u, err := url.Parse(strings.TrimRight(raw, "/"))
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("oauth: bad API base URL %q", raw)
		}
		c.bases = append(c.bases, u)
	}
	if c.backoff <= 0 {
		c.backoff = 200 * time.Millisecond
	}
	if c.http == nil {
		c.http = &http.Client{Transport: newTransport(cfg.Timeout)}
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// newTransport dials with a deadline shorter than the call's, so that an
// unreachable primary host still leaves time to try a fallback.
func newTransport(timeout time.Duration) *http.Transport {
	dial := min(timeout/3, 3*time.Second)
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: dial, KeepAlive: 30 * time.Second}).DialContext
	t.TLSHandshakeTimeout = dial
	t.MaxIdleConnsPerHost = 16
	return t
}

// Do sends req to the first host that answers, hands the response to handle
// and closes its body afterwards. An errcode -1 (busy) from handle is retried
// once after a short pause. The whole call, reading the body inside handle
// included, is bounded by the client's deadline; running out of it gives an
// error wrapping ErrTimeout.
func (c *Client) Do(ctx context.Context, req Request, handle func(*http.Response) error) error {
	if c.observe == nil {
		return c.do(ctx, req, handle)
	}
	start := time.Now()
	err := c.do(ctx, req, handle)
	c.observe(req.Path, Errcode(err), time.Since(start))
	return err
}

func (c *Client) do(ctx context.Context, req Request, handle func(*http.Response) error) error {
	timeout := c.timeout
	if req.Timeout > 0 {
		timeout = req.Timeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	err := c.attempt(ctx, req, handle)
	if HasCode(err, CodeBusy) {
		c.log.Warn("wechat busy, retrying once", "path", req.Path)
		if err := sleep(ctx, c.backoff); err != nil {
			return c.deadlineError(ctx, req, err)
		}
		err = c.attempt(ctx, req, handle)
	}
	if err != nil && ctx.Err() != nil {
		return c.deadlineError(ctx, req, err)
	}
	return err
}

// CallJSON is Do for the common case: decode the JSON answer into out (which
// may be nil), turning a non-zero errcode into an *APIError.
func (c *Client) CallJSON(ctx context.Context, req Request, out any) error {
	return c.Do(ctx, req, func(resp *http.Response) error {
		return DecodeJSON(req.Path, resp.Body, out)
	})
}

func (c *Client) attempt(ctx context.Context, req Request, handle func(*http.Response) error) error {
	var lastErr error
	for _, base := range c.bases {
		if ctx.Err() != nil {
			break
		}
		resp, err := c.send(ctx, base, req)
		if err != nil {
			lastErr = err
			c.log.Warn("wechat host failed", "host", base.Host, "path", req.Path, "err", err)
			continue
		}
		if resp.StatusCode >= 500 {
			io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			lastErr = &serverError{host: base.Host, path: req.Path, status: resp.StatusCode}
			c.log.Warn("wechat host failed", "host", base.Host, "path", req.Path, "status", resp.StatusCode)
			continue
		}
		err = c.handle(req, resp, handle)
		resp.Body.Close()
		return err
	}
	if lastErr == nil {
		lastErr = ctx.Err()
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, lastErr)
}

func (c *Client) handle(req Request, resp *http.Response, handle func(*http.Response) error) error {
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%w: %s answered HTTP %d", ErrBadResponse, req.Path, resp.StatusCode)
	}
	return handle(resp)
}

// send performs one HTTP exchange. Errors never carry the URL's query,
// which holds secrets, codes and tokens.
func (c *Client) send(ctx context.Context, base *url.URL, req Request) (*http.Response, error) {
	u := *base
	u.Path = base.Path + "/" + req.Path
	u.RawQuery = req.Query.Encode()
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	var body io.Reader
	if req.Body != nil {
		body = bytes.NewReader(req.Body)
	}
	hreq, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, fmt.Errorf("build request for %s: %w", req.Path, redact(err))
	}
	if req.Body != nil {
		hreq.Header.Set("Content-Type", "application/json")
	}
	hreq.Header.Set("User-Agent", "wxappliance")
	start := time.Now()
	resp, err := c.http.Do(hreq)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", base.Host, req.Path, redact(err))
	}
	c.log.Debug("wechat call", "host", base.Host, "path", req.Path, "status", resp.StatusCode, "dur", time.Since(start))
	return resp, nil
}

func (c *Client) deadlineError(ctx context.Context, req Request, err error) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%w: %s: %w", ErrTimeout, req.Path, err)
	}
	return err
}

// redact drops the URL from a *url.Error, keeping the operation and cause.
func redact(err error) error {
	var uerr *url.Error
	if errors.As(err, &uerr) {
		return fmt.Errorf("%s: %w", uerr.Op, uerr.Err)
	}
	return err
}

// DecodeJSON reads a WeChat JSON answer from r. WeChat labels JSON as
// text/plain or with "encoding=utf-8" instead of "charset", so the bytes are
// decoded as UTF-8 whatever the headers say. A non-zero errcode becomes an
// *APIError; out may be nil when only success matters.
func DecodeJSON(path string, r io.Reader, out any) error {
	data, err := io.ReadAll(io.LimitReader(r, maxJSONBody+1))
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > maxJSONBody {
		return fmt.Errorf("%w: %s answer over %d bytes", ErrBadResponse, path, maxJSONBody)
	}
	return decodeBytes(path, data, out)
}

func decodeBytes(path string, data []byte, out any) error {
	var status struct {
		Errcode *int   `json:"errcode"`
		Errmsg  string `json:"errmsg"`
	}
	if err := json.Unmarshal(data, &status); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrBadResponse, path, err)
	}
	if status.Errcode != nil && *status.Errcode != 0 {
		return &APIError{Code: *status.Errcode, Msg: status.Errmsg, Path: path}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrBadResponse, path, err)
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
