package media_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/100steps/wxappliance/appliance/sandbox/sandboxtest"
	"github.com/100steps/wxappliance/kv/kvtest"
	"github.com/100steps/wxappliance/media"
	"github.com/100steps/wxappliance/oauth"
)

// upstream serves the sandbox's token endpoint and the given media/get
// handler, so each test controls exactly what WeChat answers.
func newService(t *testing.T, mediaGet http.HandlerFunc, maxBytes int64) *media.Service {
	t.Helper()
	return newServiceWith(t, mediaGet, media.Options{MaxBytes: maxBytes, Timeout: 2 * time.Second})
}

func newServiceWith(t *testing.T, mediaGet http.HandlerFunc, opts media.Options) *media.Service {
	t.Helper()
	wx := sandboxtest.New(t, sandboxtest.Options{Routes: map[string]http.HandlerFunc{"/cgi-bin/media/get": mediaGet}})
	return media.New(wx.App(kvtest.Badger(t)), opts)
}

func answer(ct string, body string, headers ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if ct != "" {
			w.Header().Set("Content-Type", ct)
		}
		for i := 0; i+1 < len(headers); i += 2 {
			w.Header().Set(headers[i], headers[i+1])
		}
		io.WriteString(w, body)
	}
}

func TestErrorsWhateverTheContentType(t *testing.T) {
	for _, ct := range []string{"text/plain", "application/json", "application/json; encoding=utf-8", "image/jpeg", ""} {
		t.Run(ct, func(t *testing.T) {
			svc := newService(t, answer(ct, `{"errcode":40007,"errmsg":"invalid media_id"}`), 1<<20)
			opened := false
			err := svc.Stream(context.Background(), "x", func(media.Head) (io.Writer, error) {
				opened = true
				return io.Discard, nil
			})
			if !oauth.HasCode(err, 40007) || opened {
				t.Fatalf("err = %v, opened = %v", err, opened)
			}
		})
	}
}

func TestVideoAnswer(t *testing.T) {
	svc := newService(t, answer("text/plain", `{"video_url":"http://example.com/v.mp4"}`), 1<<20)
	f, err := svc.Fetch(context.Background(), "v")
	if err != nil || f.VideoURL != "http://example.com/v.mp4" || f.Data != nil {
		t.Fatalf("%+v %v", f, err)
	}
}

func TestJSONWithoutVideoURLIsBad(t *testing.T) {
	svc := newService(t, answer("application/json", `{"hello":"world"}`), 1<<20)
	if _, err := svc.Fetch(context.Background(), "v"); !errors.Is(err, oauth.ErrBadResponse) {
		t.Fatalf("err = %v", err)
	}
}

func TestFileAndFilename(t *testing.T) {
	body := "\xff\xd8\xff\xe0binary"
	tests := []struct{ disposition, want string }{
		{`attachment; filename="photo.jpg"`, "photo.jpg"},
		{`attachment; filename="../../etc/passwd"`, "passwd"},
		{`attachment; filename="a\\b.jpg"`, "b.jpg"},
		{`attachment; filename*=UTF-8''%E5%9B%BE.jpg`, "图.jpg"},
		{`garbage;;;`, ""},
		{``, ""},
	}
	for _, tt := range tests {
		t.Run(tt.disposition, func(t *testing.T) {
			svc := newService(t, answer("image/jpeg", body, "Content-Disposition", tt.disposition), 1<<20)
			f, err := svc.Fetch(context.Background(), "m")
			if err != nil {
				t.Fatal(err)
			}
			if string(f.Data) != body || f.ContentType != "image/jpeg" || f.Filename != tt.want {
				t.Fatalf("%q %q %q", f.Data, f.ContentType, f.Filename)
			}
		})
	}
}

func TestSizeCap(t *testing.T) {
	big := strings.Repeat("x", 5000)
	t.Run("known length", func(t *testing.T) {
		svc := newService(t, answer("image/jpeg", big, "Content-Length", "5000"), 4096)
		opened := false
		err := svc.Stream(context.Background(), "m", func(media.Head) (io.Writer, error) { opened = true; return io.Discard, nil })
		if !errors.Is(err, media.ErrTooLarge) || opened {
			t.Fatalf("err = %v opened = %v", err, opened)
		}
	})
	t.Run("chunked", func(t *testing.T) {
		svc := newService(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "image/jpeg")
			for range 5 {
				io.WriteString(w, big[:1000])
				w.(http.Flusher).Flush()
			}
		}, 4096)
		var buf bytes.Buffer
		err := svc.Stream(context.Background(), "m", func(h media.Head) (io.Writer, error) {
			if h.Size != -1 {
				t.Errorf("size %d, want unknown", h.Size)
			}
			return &buf, nil
		})
		if !errors.Is(err, media.ErrTooLarge) || buf.Len() > 4097 {
			t.Fatalf("err = %v, copied %d", err, buf.Len())
		}
	})
	t.Run("exactly at the cap", func(t *testing.T) {
		svc := newService(t, answer("image/jpeg", big[:4096]), 4096)
		if f, err := svc.Fetch(context.Background(), "m"); err != nil || len(f.Data) != 4096 {
			t.Fatalf("%v", err)
		}
	})
}

func TestBadIDNeverAsked(t *testing.T) {
	asked := false
	svc := newService(t, func(w http.ResponseWriter, r *http.Request) { asked = true }, 1<<20)
	for _, id := range []string{"", "a b", "a\nb", strings.Repeat("a", 257), "é"} {
		if _, err := svc.Fetch(context.Background(), id); !errors.Is(err, media.ErrBadID) {
			t.Errorf("%q: %v", id, err)
		}
	}
	if asked {
		t.Fatal("WeChat was asked about a bad id")
	}
}
