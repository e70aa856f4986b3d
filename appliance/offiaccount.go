package appliance

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"

	"github.com/100steps/wxappliance/media"
)

// offiaccountUser is U3: cgi-bin/user/info for the session's user, 403 when
// they do not follow the account.
func (a *Appliance) offiaccountUser(w http.ResponseWriter, r *http.Request) error {
	_, sess, err := a.session(r)
	if err != nil {
		return err
	}
	info, err := a.app.UserInfo(r.Context(), sess.OpenID)
	if err != nil {
		return err
	}
	return writeRawObject(w, info)
}

// jssdkConfig is O1: POST {"url": ...} -> {appid, timestamp, noncestr,
// signature}. The seed's own example sends JSON without a Content-Type, so
// the body is read as JSON when it looks like JSON and as a form otherwise,
// whatever the header says; ?url= works too.
func (a *Appliance) jssdkConfig(w http.ResponseWriter, r *http.Request) error {
	page, err := pageURL(r)
	if err != nil {
		return err
	}
	if page == "" {
		return badRequest("缺少url参数", nil)
	}
	cfg, err := a.jssdk.Config(r.Context(), page)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, cfg)
	return nil
}

func pageURL(r *http.Request) (string, error) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return "", err
	}
	body = bytes.TrimSpace(body)
	if u, ok := plainURLBody(body); ok {
		return u, nil
	}
	if len(body) > 0 && body[0] == '{' {
		var in struct {
			URL string `json:"url"`
		}
		if err := json.Unmarshal(body, &in); err != nil {
			return "", badRequest("请求体不是有效的JSON", err)
		}
		return in.URL, nil
	}
	if len(body) > 0 {
		if form, err := url.ParseQuery(string(body)); err == nil && form.Has("url") {
			return form.Get("url"), nil
		}
	}
	return r.URL.Query().Get("url"), nil
}

// plainURLBody reads the body frontends send, exactly {"url":"..."} with a
// value that JSON leaves as it is (printable ASCII without '"' or '\\'),
// without json.Unmarshal's reflection; ok is false for any other body,
// which pageURL decodes as JSON. FuzzPlainURLBody checks they agree.
func plainURLBody(body []byte) (string, bool) {
	v, ok := bytes.CutPrefix(body, []byte(`{"url":"`))
	if !ok {
		return "", false
	}
	if v, ok = bytes.CutSuffix(v, []byte(`"}`)); !ok {
		return "", false
	}
	for _, c := range v {
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			return "", false
		}
	}
	return string(v), true
}

// mediaBase64 is O2: the file base64-encoded in JSON, as the old service
// answered it, or {"video_url": ...} for a video. The base64 is streamed as
// it downloads rather than built in memory.
func (a *Appliance) mediaBase64(w http.ResponseWriter, r *http.Request) error {
	id := r.URL.Query().Get("media_id")
	if id == "" {
		return badRequest("缺少media_id参数", nil)
	}
	var enc io.WriteCloser
	var out *bufio.Writer
	var contentType string
	err := a.media.Stream(r.Context(), id, func(h media.Head) (io.Writer, error) {
		if h.VideoURL != "" {
			writeJSON(w, http.StatusOK, map[string]string{"video_url": h.VideoURL})
			return nil, nil
		}
		contentType = h.ContentType
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusOK)
		out = streamBuffers.Get().(*bufio.Writer)
		out.Reset(w)
		out.WriteString(`{"media_data":"`)
		enc = base64.NewEncoder(base64.StdEncoding, out)
		return enc, nil
	})
	if enc == nil {
		return err
	}
	defer func() {
		out.Reset(nil)
		streamBuffers.Put(out)
	}()
	if err != nil {
		a.abortStream(r, err)
	}
	enc.Close()
	ct, _ := json.Marshal(contentType)
	out.WriteString(`","content_type":` + string(ct) + "}\n")
	out.Flush()
	return nil
}

// streamBuffers gather the base64 of a file into writes of 32 KiB. The
// encoder writes 1 KiB at a time, and net/http sends every 4 KiB as it
// comes: a 64 KiB file cost about 22 write(2) calls, half of the route's
// CPU under wrk; through this buffer it costs 6.
var streamBuffers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 32<<10) }}

// mediaRaw streams the file with WeChat's Content-Type, without the base64
// inflation of the legacy route.
func (a *Appliance) mediaRaw(w http.ResponseWriter, r *http.Request) error {
	id := r.URL.Query().Get("media_id")
	if id == "" {
		return badRequest("缺少media_id参数", nil)
	}
	started := false
	err := a.media.Stream(r.Context(), id, func(h media.Head) (io.Writer, error) {
		started = true
		if h.VideoURL != "" {
			writeJSON(w, http.StatusOK, map[string]string{"video_url": h.VideoURL})
			return nil, nil
		}
		hdr := w.Header()
		hdr.Set("Content-Type", safeMediaType(h.ContentType))
		hdr.Set("X-Content-Type-Options", "nosniff")
		hdr.Set("Cache-Control", "private, max-age=3600")
		// attachment: an <img> or <audio> still shows it, but a browser
		// never renders it as a page of this origin.
		disp := "attachment"
		if h.Filename != "" {
			disp = mime.FormatMediaType("attachment", map[string]string{"filename": h.Filename})
		}
		hdr.Set("Content-Disposition", disp)
		if h.Size >= 0 {
			hdr.Set("Content-Length", strconv.FormatInt(h.Size, 10))
		}
		w.WriteHeader(http.StatusOK)
		return w, nil
	})
	if err != nil && started {
		a.abortStream(r, err)
	}
	return err
}

// abortStream ends a response whose headers are already out: the
// connection is cut so the client sees a failed download, not a short file.
func (a *Appliance) abortStream(r *http.Request, err error) {
	a.log.Warn("media stream failed after it started", "path", r.URL.Path, "err", err)
	panic(http.ErrAbortHandler)
}

// safeMediaType keeps image, audio and video types and turns anything else
// into a download.
func safeMediaType(ct string) string {
	mt, _, err := mime.ParseMediaType(ct)
	if err == nil {
		for _, p := range []string{"image/", "audio/", "video/"} {
			if strings.HasPrefix(mt, p) {
				return ct
			}
		}
	}
	return "application/octet-stream"
}
