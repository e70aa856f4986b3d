// Package media downloads temporary media (images, voice, video) that
// pages uploaded to WeChat with the JS-SDK.
package media

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/100steps/wxappliance/oauth"
)

var (
	// errNoAnswer and errStalled say which wait on WeChat ran out; both
	// come wrapped in oauth.ErrTimeout.
	errNoAnswer = errors.New("media: WeChat did not begin answering within the stall timeout")
	errStalled  = errors.New("media: WeChat sent no bytes within the stall timeout")

	// ErrBadID means the media_id is empty or cannot be a media id; WeChat
	// is not asked.
	ErrBadID = errors.New("media: bad media_id")
	// ErrTooLarge means the file is over the configured size limit.
	ErrTooLarge = errors.New("media: file over the size limit")
)

// Head describes a media file before its bytes are copied. A video is not
// downloaded: WeChat answers with a URL to fetch it from.
type Head struct {
	ContentType string
	Size        int64 // -1 when WeChat did not say
	Filename    string
	VideoURL    string
}

// File is a whole media file in memory.
type File struct {
	Head
	Data []byte
}

// Options configures a Service.
//
// Two deadlines bound a download, so that a WeChat that stops answering is
// noticed at once while a large file still has time to arrive:
//
//   - StallTimeout (the appliance passes wechat.timeout) bounds each wait
//     on WeChat: for its answer to begin (access_token fetch, connection,
//     response headers, the first byte of the body and any retry
//     included), and then for each read of the body. WeChat silent that
//     long fails the download with oauth.ErrTimeout (504).
//   - Timeout (media.timeout) bounds the whole download, however steadily
//     the bytes come; running out of it is oauth.ErrTimeout too.
//
// Time spent writing what was read (to a slow browser, say) is not a stall:
// only reads from WeChat are timed.
type Options struct {
	MaxBytes int64
	// Timeout bounds one download; media moves more bytes than API calls.
	Timeout time.Duration
	// StallTimeout bounds each wait on WeChat; zero leaves only Timeout.
	StallTimeout time.Duration
}

// Service fetches media with the app's access_token.
type Service struct {
	app      *oauth.App
	maxBytes int64
	timeout  time.Duration
	stall    time.Duration
}

// New returns a Service.
func New(app *oauth.App, opts Options) *Service {
	stall := opts.StallTimeout
	if stall <= 0 || (opts.Timeout > 0 && stall > opts.Timeout) {
		stall = opts.Timeout
	}
	return &Service{app: app, maxBytes: opts.MaxBytes, timeout: opts.Timeout, stall: stall}
}

// MaxBytes is the largest file Stream copies.
func (s *Service) MaxBytes() int64 { return s.maxBytes }

// Fetch reads the whole file into memory. The transports stream instead
// (Stream): a whole file per call is what RPC's media budget exists to
// bound.
func (s *Service) Fetch(ctx context.Context, id string) (*File, error) {
	f := &File{}
	var buf bytes.Buffer
	err := s.Stream(ctx, id, func(h Head) (io.Writer, error) {
		f.Head = h
		if h.Size > 0 {
			buf.Grow(int(h.Size))
		}
		return &buf, nil
	})
	if err != nil {
		return nil, err
	}
	f.Data = buf.Bytes()
	return f, nil
}

// Stream downloads media id and copies it to the writer open returns, at
// most MaxBytes. open is called once WeChat's answer is known to be a file
// or a video URL (then nothing is copied and the writer may be nil); errors
// WeChat reports, whatever Content-Type it labels them with, are returned
// before open is called. ErrTooLarge after open means the writer got a
// truncated file.
func (s *Service) Stream(ctx context.Context, id string, open func(Head) (io.Writer, error)) error {
	if !validID(id) {
		return ErrBadID
	}
	req := oauth.Request{Path: "cgi-bin/media/get", Query: url.Values{"media_id": {id}}, Timeout: s.timeout}
	if s.stall <= 0 {
		return s.app.Do(ctx, req, func(resp *http.Response) error {
			return s.copy(resp, resp.Body, func() {}, open)
		})
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// Until the file's first byte is in, WeChat has s.stall in all to
	// answer, retries included; then s.stall for each read.
	answer := time.AfterFunc(s.stall, func() { cancel(errNoAnswer) })
	defer answer.Stop()
	err := s.app.Do(ctx, req, func(resp *http.Response) error {
		body := newStallReader(resp.Body, s.stall, cancel)
		defer body.stop()
		return s.copy(resp, body, func() { answer.Stop() }, open)
	})
	if cause := context.Cause(ctx); err != nil && (cause == errNoAnswer || cause == errStalled) {
		// The client saw its context cancelled, not a deadline: say
		// which deadline it was.
		return fmt.Errorf("%w: %w (%v)", oauth.ErrTimeout, cause, err)
	}
	return err
}

// copy sends the answer in resp, whose body is read from body, to open's
// writer. began is called once the answer is known to be a file.
func (s *Service) copy(resp *http.Response, r io.Reader, began func(), open func(Head) (io.Writer, error)) error {
	ct := resp.Header.Get("Content-Type")
	body := bufio.NewReader(r)
	var first byte
	b, err := body.Peek(1)
	switch {
	case err == nil:
		first = b[0]
	case err != io.EOF:
		// Nothing is opened for an answer that never began.
		return fmt.Errorf("media: read: %w", err)
	}
	if isJSON(ct, first) {
		return decodeJSONAnswer(body, open)
	}
	began()
	if resp.ContentLength > s.maxBytes {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, resp.ContentLength, s.maxBytes)
	}
	w, err := open(Head{ContentType: ct, Size: resp.ContentLength, Filename: filename(resp.Header)})
	if err != nil {
		return err
	}
	n, err := io.Copy(w, io.LimitReader(body, s.maxBytes+1))
	if err != nil {
		return fmt.Errorf("media: copy: %w", err)
	}
	if n > s.maxBytes {
		return fmt.Errorf("%w: over %d bytes", ErrTooLarge, s.maxBytes)
	}
	return nil
}

// isJSON tells an error or a video answer from a file. WeChat labels its
// JSON text/plain, application/json or with "encoding=utf-8", so any of
// those, or a body that starts with '{', counts.
func isJSON(contentType string, first byte) bool {
	mt, _, _ := mime.ParseMediaType(contentType)
	return strings.HasPrefix(mt, "text/") || strings.HasSuffix(mt, "json") || first == '{'
}

func decodeJSONAnswer(r io.Reader, open func(Head) (io.Writer, error)) error {
	var video struct {
		VideoURL string `json:"video_url"`
	}
	data, err := io.ReadAll(io.LimitReader(r, 64<<10))
	if err != nil {
		return fmt.Errorf("media: read answer: %w", err)
	}
	// A non-zero errcode becomes an *oauth.APIError here.
	if err := oauth.DecodeJSON("cgi-bin/media/get", bytes.NewReader(data), &video); err != nil {
		return err
	}
	if video.VideoURL == "" {
		return fmt.Errorf("%w: cgi-bin/media/get answered JSON without video_url", oauth.ErrBadResponse)
	}
	_, err = open(Head{VideoURL: video.VideoURL, Size: -1})
	return err
}

// filename is the name WeChat suggests, reduced to a safe base name.
func filename(h http.Header) string {
	_, params, err := mime.ParseMediaType(h.Get("Content-Disposition"))
	if err != nil {
		return ""
	}
	name := params["filename"]
	if i := strings.LastIndexAny(name, `/\`); i >= 0 {
		name = name[i+1:]
	}
	if strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f || r == '"' }) {
		return ""
	}
	return name
}

// validID accepts what can be a media id: 1 to 256 printable ASCII
// characters without spaces. WeChat's are base64url-like.
func validID(id string) bool {
	if id == "" || len(id) > 256 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] <= ' ' || id[i] >= 0x7f {
			return false
		}
	}
	return true
}

// stallReader cancels the download when one read from WeChat takes longer
// than d. Only the time spent inside Read counts: a reader that waits for
// its own writer is not stalled.
type stallReader struct {
	r     io.Reader
	d     time.Duration
	timer *time.Timer
}

func newStallReader(r io.Reader, d time.Duration, cancel context.CancelCauseFunc) *stallReader {
	t := time.AfterFunc(time.Hour, func() { cancel(errStalled) })
	t.Stop()
	return &stallReader{r: r, d: d, timer: t}
}

func (s *stallReader) Read(p []byte) (int, error) {
	s.timer.Reset(s.d)
	n, err := s.r.Read(p)
	s.timer.Stop()
	return n, err
}

func (s *stallReader) stop() { s.timer.Stop() }
