package sandbox

import (
	"bytes"
	"image/color"
	"image/jpeg"
	"net/http"
	"net/url"
	"strconv"
	"testing"
)

func TestMediaGet(t *testing.T) {
	e := newEnv(t)
	tok := e.appToken()
	for _, tc := range []struct {
		id, ctype, filename string
		size                int // 0: any
	}{
		{MediaImage, "image/jpeg", "sandbox-image.jpg", 0},
		{MediaVoice, "audio/amr", "sandbox-voice.amr", 0},
		{Media64K, "image/jpeg", "sandbox-64k.jpg", 65536},
		{MediaBig, "image/jpeg", "sandbox-big.jpg", MediaBigSize},
	} {
		t.Run(tc.id, func(t *testing.T) {
			a := e.get("cgi-bin/media/get", url.Values{"access_token": {tok}, "media_id": {tc.id}})
			if a.Status != http.StatusOK || a.Header.Get("Content-Type") != tc.ctype {
				t.Fatalf("status %d Content-Type %q", a.Status, a.Header.Get("Content-Type"))
			}
			if cd := a.Header.Get("Content-Disposition"); cd != `attachment; filename="`+tc.filename+`"` {
				t.Errorf("Content-Disposition %q", cd)
			}
			if a.Header.Get("Content-Length") != strconv.Itoa(len(a.Body)) {
				t.Errorf("Content-Length %q for %d bytes", a.Header.Get("Content-Length"), len(a.Body))
			}
			if tc.size != 0 && len(a.Body) != tc.size {
				t.Errorf("size %d, want %d", len(a.Body), tc.size)
			}
			if got := http.DetectContentType(a.Body); tc.ctype == "image/jpeg" && got != "image/jpeg" {
				t.Errorf("sniffed as %q", got)
			}
			switch tc.ctype {
			case "image/jpeg":
				img, err := jpeg.Decode(bytes.NewReader(a.Body))
				if err != nil || img.Bounds().Dx() != 64 {
					t.Errorf("not a decodable 64px JPEG: %v", err)
				}
			case "audio/amr":
				if !bytes.HasPrefix(a.Body, []byte("#!AMR\n")) || len(a.Body) <= 6 {
					t.Errorf("not AMR: % x", a.Body[:min(16, len(a.Body))])
				}
			}
		})
	}
	if MediaBigSize <= 10<<20 {
		t.Errorf("MediaBigSize %d is not over 10 MiB", MediaBigSize)
	}
}

func TestMediaVideoAndErrors(t *testing.T) {
	e := newEnv(t)
	tok := e.appToken()
	v := e.get("cgi-bin/media/get", url.Values{"access_token": {tok}, "media_id": {MediaVideo}})
	if v.Header.Get("Content-Type") != "text/plain" {
		t.Errorf("video Content-Type %q", v.Header.Get("Content-Type"))
	}
	videoURL, _ := v.json(t)["video_url"].(string)
	if videoURL != e.srv.URL+"/"+VideoPath {
		t.Fatalf("video_url %q", videoURL)
	}
	resp, err := http.Get(videoURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "video/mp4" {
		t.Errorf("video download: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}

	unknown := e.get("cgi-bin/media/get", url.Values{"access_token": {tok}, "media_id": {"nope"}})
	if unknown.Header.Get("Content-Type") != "text/plain" || string(unknown.Body) != `{"errcode":40007,"errmsg":"invalid media_id"}` {
		t.Errorf("unknown media: %q %s", unknown.Header.Get("Content-Type"), unknown.Body)
	}
	wantErr(t, unknown, 40007)
	wantErr(t, e.get("cgi-bin/media/get", url.Values{"access_token": {tok}}), 41006)
	wantErr(t, e.get("cgi-bin/media/get", url.Values{"media_id": {MediaImage}}), 41001)
}

func TestHeadImg(t *testing.T) {
	// sns/userinfo's headimgurl points here (cgi-bin/user/info has no
	// avatar since 2021).
	e := newEnv(t)
	a := e.get("_files/headimg/"+OpenIDXiaoming+"/132", nil)
	img, err := jpeg.Decode(bytes.NewReader(a.Body))
	if err != nil || img.Bounds().Dx() != 132 {
		t.Fatalf("avatar: %v", err)
	}
	if a := e.get("_files/headimg/oSBX_nobody/132", nil); a.Status != 404 {
		t.Errorf("unknown avatar: status %d", a.Status)
	}
}

func TestPadJPEG(t *testing.T) {
	img := smallJPEG(8, color.RGBA{G: 200, A: 255})
	for _, size := range []int{len(img) + 4, len(img) + 5, len(img) + 65537, len(img) + 65538, len(img) + 65541, len(img) + 200000} {
		out := padJPEG(img, size)
		if len(out) != size {
			t.Fatalf("padJPEG to %d: got %d bytes", size, len(out))
		}
		if _, err := jpeg.Decode(bytes.NewReader(out)); err != nil {
			t.Fatalf("padJPEG to %d: %v", size, err)
		}
	}
}
