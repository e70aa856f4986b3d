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

	"wxappliance/oauth"
)

var (
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
type Options struct {
	MaxBytes int64
	// Timeout bounds one download; media moves more bytes than API calls.
	Timeout time.Duration
}

// Service fetches media with the app's access_token.
type Service struct {
	app      *oauth.App
	maxBytes int64
	timeout  time.Duration
}

// New returns a Service.
func New(app *oauth.App, opts Options) *Service {
	return &Service{app: app, maxBytes: opts.MaxBytes, timeout: opts.Timeout}
}

// Fetch reads the whole file into memory, for the legacy route that answers
// it base64-encoded.
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
	return s.app.Do(ctx, req, func(resp *http.Response) error {
		return s.copy(resp, open)
	})
}

func (s *Service) copy(resp *http.Response, open func(Head) (io.Writer, error)) error {
	ct := resp.Header.Get("Content-Type")
	body := bufio.NewReader(resp.Body)
	var first byte
	if b, err := body.Peek(1); err == nil {
		first = b[0]
	}
	if isJSON(ct, first) {
		return decodeJSONAnswer(body, open)
	}
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
