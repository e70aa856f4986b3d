package sandbox

import (
	"bytes"
	"hash/fnv"
	"image"
	"image/color"
	"image/jpeg"
	"net/http"
	"strconv"
	"strings"
	"sync"
)

// Media ids cgi-bin/media/get knows.
const (
	MediaImage = "sandbox-image" // a small JPEG
	MediaVoice = "sandbox-voice" // AMR-NB audio
	MediaVideo = "sandbox-video" // answered as {"video_url": ...} like WeChat's videos
	Media64K   = "sandbox-64k"   // a JPEG of exactly Media64KSize bytes, for load tests
	MediaBig   = "sandbox-big"   // a JPEG of MediaBigSize bytes, just over 10 MiB, for size caps
)

// Sizes of the fixed-size media.
const (
	Media64KSize = 64 << 10
	MediaBigSize = 10<<20 + 4<<10
)

// filesPrefix serves the URLs the API answers point to (avatars, video).
// They are not API endpoints: not counted, never faulted.
const filesPrefix = "_files/"

// VideoPath is where video_url points, relative to the sandbox root.
const VideoPath = "_files/sandbox-video.mp4"

// binaryMedia is one downloadable medium.
type binaryMedia struct {
	ctype    string
	filename string
	body     []byte
}

// media holds each medium built on first use, each on its own: importing
// the package (or running without the sandbox) costs nothing, and a test
// asking for the small image does not wait for the 10 MiB one.
var media = map[string]func() binaryMedia{
	MediaImage: sync.OnceValue(func() binaryMedia { return binaryMedia{"image/jpeg", MediaImage + ".jpg", baseJPEG()} }),
	MediaVoice: sync.OnceValue(func() binaryMedia { return binaryMedia{"audio/amr", MediaVoice + ".amr", amr(50)} }),
	Media64K: sync.OnceValue(func() binaryMedia {
		return binaryMedia{"image/jpeg", Media64K + ".jpg", padJPEG(baseJPEG(), Media64KSize)}
	}),
	MediaBig: sync.OnceValue(func() binaryMedia {
		return binaryMedia{"image/jpeg", MediaBig + ".jpg", padJPEG(baseJPEG(), MediaBigSize)}
	}),
}

var baseJPEG = sync.OnceValue(func() []byte { return smallJPEG(64, color.RGBA{0x07, 0xc1, 0x60, 0xff}) })

// smallJPEG encodes a size×size gradient over base.
func smallJPEG(size int, base color.RGBA) []byte {
	m := image.NewRGBA(image.Rect(0, 0, size, size))
	for y := range size {
		for x := range size {
			m.Set(x, y, color.RGBA{
				R: base.R ^ uint8(x*255/size),
				G: base.G,
				B: base.B ^ uint8(y*255/size),
				A: 0xff,
			})
		}
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, m, &jpeg.Options{Quality: 80}); err != nil {
		panic("sandbox: encoding jpeg: " + err.Error())
	}
	return buf.Bytes()
}

// padJPEG returns img grown to exactly size bytes with comment (COM)
// segments after the SOI marker, so the result is still a valid JPEG that
// decoders and content sniffers accept.
func padJPEG(img []byte, size int) []byte {
	need := size - len(img)
	if need < 4 {
		panic("sandbox: padJPEG: target too small")
	}
	out := make([]byte, 0, size)
	out = append(out, img[:2]...) // SOI
	filler := bytes.Repeat([]byte("wxappliance sandbox padding. "), 0xffff/29+1)
	for need > 0 {
		n := min(need, 4+0xffff-2) // marker, length, at most 65533 payload bytes
		if rest := need - n; rest > 0 && rest < 4 {
			n -= 4 // leave room for one more whole segment
		}
		payload := n - 4
		out = append(out, 0xff, 0xfe, byte((payload+2)>>8), byte(payload+2))
		out = append(out, filler[:payload]...)
		need -= n
	}
	return append(out, img[2:]...)
}

// amr returns an AMR-NB file of frames 20 ms frames of silence-ish audio
// at 12.2 kbit/s (mode 7: one header byte and 31 data bytes per frame).
func amr(frames int) []byte {
	out := []byte("#!AMR\n")
	for range frames {
		out = append(out, 0x3c)
		out = append(out, make([]byte, 31)...)
	}
	return out
}

// mp4 is a minimal MP4 header: an ftyp box and an empty free box. Enough
// for content sniffing, not for playback.
var mp4 = []byte{
	0, 0, 0, 0x18, 'f', 't', 'y', 'p', 'i', 's', 'o', 'm', 0, 0, 2, 0,
	'i', 's', 'o', 'm', 'm', 'p', '4', '1',
	0, 0, 0, 8, 'f', 'r', 'e', 'e',
}

// handleMediaGet serves GET cgi-bin/media/get. Errors and the video answer
// are JSON with text/plain, as WeChat sends them; clients must tell media
// from errors by Content-Type or by sniffing, not by status.
func (s *Sandbox) handleMediaGet(w http.ResponseWriter, r *http.Request) {
	if !s.appToken(w, r, ctypeText) {
		return
	}
	id := r.URL.Query().Get("media_id")
	if id == "" {
		writeErr(w, ctypeText, 41006)
		return
	}
	if id == MediaVideo {
		writeJSON(w, ctypeText, struct {
			VideoURL string `json:"video_url"`
		}{baseURL(r) + "/" + VideoPath})
		return
	}
	build, ok := media[id]
	if !ok {
		writeErr(w, ctypeText, 40007)
		return
	}
	m := build()
	h := w.Header()
	h.Set("Content-Type", m.ctype)
	h.Set("Content-Disposition", `attachment; filename="`+m.filename+`"`)
	h.Set("Cache-Control", "no-cache, must-revalidate")
	h.Set("Content-Length", strconv.Itoa(len(m.body)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(m.body)
	}
}

// avatars caches the generated avatar of each test user.
var avatars sync.Map // openid -> []byte

// serveFile serves _files/: the video behind video_url and the avatars
// behind headimgurl.
func (s *Sandbox) serveFile(w http.ResponseWriter, r *http.Request, name string) {
	switch {
	case name == strings.TrimPrefix(VideoPath, filesPrefix):
		w.Header().Set("Content-Type", "video/mp4")
		w.Write(mp4)
		return
	case strings.HasPrefix(name, "headimg/"):
		openid, _, _ := strings.Cut(strings.TrimPrefix(name, "headimg/"), "/")
		if _, ok := findUser(openid); ok {
			w.Header().Set("Content-Type", "image/jpeg")
			w.Write(avatar(openid))
			return
		}
	}
	http.Error(w, "sandbox: no such file", http.StatusNotFound)
}

func avatar(openid string) []byte {
	if b, ok := avatars.Load(openid); ok {
		return b.([]byte)
	}
	h := fnv.New32a()
	h.Write([]byte(openid))
	v := h.Sum32()
	b := smallJPEG(132, color.RGBA{uint8(v), uint8(v >> 8), uint8(v >> 16), 0xff})
	avatars.Store(openid, b)
	return b
}
