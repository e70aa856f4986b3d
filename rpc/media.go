package rpc

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"

	"github.com/100steps/wxappliance/appliance/wire"
	"github.com/100steps/wxappliance/media"
)

// DefaultMediaBudget is Options.MediaBudget's default: two 10 MiB files
// (13.4 MiB each in base64) at once, or hundreds of ordinary photos. It
// stays well under server.memory_limit (64 MiB), so a burst of media.get
// does not keep the collector running flat out; measured with 300
// pipelined calls of a 10 MiB file (sandbox in the same process), peak RSS
// is 71 MiB with the default memory limit and 109 MiB with none; 712 MiB
// before the budget.
const DefaultMediaBudget = 32 << 20

// mediaGet: {media_id} -> {media_data, content_type}, or {video_url} for a
// video, like GET /offiaccount/media.
//
// A file is answered in one message, so it is held in memory, base64 and
// JSON included, until that message is written. To bound what all
// connections hold together, the answer takes room in the server's media
// budget (Options.MediaBudget) as soon as WeChat's headers tell its size
// and gives it back once written:
//
//   - the answer is built once, straight from WeChat's body into one
//     []byte holding the whole JSON object, and written from there: the
//     file itself is never held, and nothing is encoded twice;
//   - a call waits in line for room until its deadline (media.timeout),
//     then is answered CodeBusy (503);
//   - a file bigger than the whole budget (still under media.max_bytes)
//     takes the whole budget and is held alone, rather than refused;
//   - when WeChat does not announce the size, room for media.max_bytes is
//     taken, and what the file did not use is given back once it is in.
func (s *Server) mediaGet(ctx context.Context, _ *conn, raw json.RawMessage) (any, error) {
	var p struct {
		MediaID string `json:"media_id"`
	}
	if err := decodeParams(raw, &p, required("media_id", &p.MediaID)); err != nil {
		return nil, err
	}
	var (
		res   *heldResult
		enc   io.WriteCloser
		video string
	)
	err := s.svc.Media.Stream(ctx, p.MediaID, func(h media.Head) (io.Writer, error) {
		if h.VideoURL != "" {
			video = h.VideoURL
			return nil, nil
		}
		var err error
		if res, err = s.holdMedia(ctx, h); err != nil {
			return nil, err
		}
		enc = base64.NewEncoder(base64.StdEncoding, res)
		return enc, nil
	})
	if err == nil && enc != nil {
		err = enc.Close()
	}
	if err != nil {
		res.release()
		return nil, err
	}
	if video != "" {
		return struct {
			VideoURL string `json:"video_url"`
		}{video}, nil
	}
	if err := res.finish(); err != nil {
		res.release()
		return nil, err
	}
	return res, nil
}

const (
	mediaDataPrefix = `{"media_data":"`
	// msgMediaBusy is errBusy's message: to the backend, waiting too long
	// for room is too many requests at once, as on a full connection.
	msgMediaBusy = "请求过多，请稍后重试"
)

// holdMedia takes room in the media budget for the answer to a file
// described by h and returns the answer to fill, with its opening already
// in.
func (s *Server) holdMedia(ctx context.Context, h media.Head) (*heldResult, error) {
	ct, err := marshal(h.ContentType)
	if err != nil {
		return nil, err
	}
	suffix := `","content_type":` + string(ct) + "}"
	size := h.Size
	if size < 0 {
		size = s.svc.Media.MaxBytes()
	}
	want := int64(len(mediaDataPrefix)+len(suffix)) + int64(base64.StdEncoding.EncodedLen(int(size)))
	taken, err := s.mediaBudget.Acquire(ctx, want)
	if err != nil {
		return nil, wire.Errorf(wire.Busy, msgMediaBusy, err)
	}
	buf := make([]byte, 0, want)
	return &heldResult{json: append(buf, mediaDataPrefix...), suffix: suffix, budget: s.mediaBudget, held: taken}, nil
}

// heldResult is a result already encoded as a JSON object, holding room in
// the media budget until the answer that carries it is written (by
// stream.respond, which writes it as it is and then releases it).
type heldResult struct {
	json   []byte
	suffix string
	budget *media.Budget
	held   int64
}

// Write appends base64 text. It never grows the buffer: the room taken
// covers exactly the file WeChat announced, or media.max_bytes.
func (r *heldResult) Write(p []byte) (int, error) {
	if len(r.json)+len(p)+len(r.suffix) > cap(r.json) {
		return 0, fmt.Errorf("%w: the file is longer than its room", media.ErrTooLarge)
	}
	r.json = append(r.json, p...)
	return len(p), nil
}

// finish closes the JSON object. A file shorter than the room taken for it
// (its size was not announced) moves to a buffer of its own size, and the
// rest of the room is given back at once.
func (r *heldResult) finish() error {
	if _, err := r.Write(nil); err != nil {
		return err
	}
	r.json = append(r.json, r.suffix...)
	if n := int64(len(r.json)); n < int64(cap(r.json))/2 {
		r.json = append(make([]byte, 0, n), r.json...)
		if give := r.held - n; give > 0 {
			r.budget.Release(give)
			r.held -= give
		}
	}
	return nil
}

// release gives the room back and drops the bytes; safe on nil and twice.
func (r *heldResult) release() {
	if r == nil {
		return
	}
	r.json = nil
	r.budget.Release(r.held)
	r.held = 0
}

// MarshalJSON keeps a heldResult a valid result wherever it is encoded;
// stream.respond writes it without this copy.
func (r *heldResult) MarshalJSON() ([]byte, error) { return r.json, nil }
