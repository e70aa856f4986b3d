package rpc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sourcegraph/jsonrpc2"
)

// stream is the jsonrpc2.ObjectStream of one connection. jsonrpc2's own
// websocket stream closes the connection on a malformed frame, cannot write
// "id": null and wraps negative ids, so this one reads each frame itself:
//
//   - a frame that is not a valid request is answered here (-32700,
//     -32600, id null when the id cannot be told) and reading goes on;
//   - a request is handed to jsonrpc2 under an internal numeric id, with
//     the backend's id and params kept aside, so the answer repeats the
//     id byte for byte (negative, fractional, string or null) and params
//     reach the method exactly as sent, not re-encoded by jsonrpc2;
//   - a response (to a callback.message request this server sent) is
//     matched here against the calls still waiting, so a late or unknown
//     one is logged and dropped, and a call given up on leaves nothing
//     behind.
//
// Every write has a deadline; gorilla allows one writer at a time, hence
// wmu.
type stream struct {
	ws        *websocket.Conn
	log       *slog.Logger
	writeWait time.Duration
	readWait  time.Duration

	wmu sync.Mutex

	mu       sync.Mutex
	closed   bool
	done     chan struct{}
	nextIn   uint64
	inbound  map[uint64]inbound
	nextOut  uint64
	outbound map[uint64]chan outcome
}

// inbound is what a request brought that jsonrpc2 is not given.
type inbound struct {
	id     json.RawMessage // as sent: a string, a number or null
	params json.RawMessage // nil when absent
}

// outcome is the backend's answer to a request this server sent.
type outcome struct {
	result json.RawMessage
	err    *jsonrpc2.Error
}

var nullID = json.RawMessage("null")

func newStream(ws *websocket.Conn, log *slog.Logger, writeWait, readWait time.Duration) *stream {
	return &stream{
		ws: ws, log: log, writeWait: writeWait, readWait: readWait,
		done:     make(chan struct{}),
		inbound:  make(map[uint64]inbound),
		outbound: make(map[uint64]chan outcome),
		nextOut:  1,
	}
}

// frame is the members of a JSON-RPC object this server looks at. A
// member that is absent stays nil; one that is null holds "null".
type frame struct {
	JSONRPC json.RawMessage `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Method  json.RawMessage `json:"method"`
	Params  json.RawMessage `json:"params"`
	Result  json.RawMessage `json:"result"`
	Error   json.RawMessage `json:"error"`
}

// dispatched is the request jsonrpc2 sees: only the method, under an
// internal id; everything else waits in inbound.
type dispatched struct {
	JSONRPC string `json:"jsonrpc"`
	ID      uint64 `json:"id"`
	Method  string `json:"method"`
}

// ReadObject implements jsonrpc2.ObjectStream. It returns only requests;
// everything else is handled on the way. An error ends the connection.
func (s *stream) ReadObject(v any) error {
	for {
		// Time to the next frame is bounded: a peer that sends nothing,
		// not even the pong to our ping, is gone.
		s.ws.SetReadDeadline(time.Now().Add(s.readWait))
		_, data, err := s.ws.ReadMessage()
		if err != nil {
			return err
		}
		if req := s.accept(data); req != nil {
			return json.Unmarshal(req, v)
		}
	}
}

// accept classifies one frame and returns the request to dispatch, or nil
// when the frame was answered or dropped here.
func (s *stream) accept(data []byte) []byte {
	var f frame
	if err := json.Unmarshal(data, &f); err != nil {
		// Unmarshal checks the whole frame is JSON before decoding, so a
		// SyntaxError means it is not; anything else is JSON of another
		// shape than an object.
		var syntax *json.SyntaxError
		if errors.As(err, &syntax) {
			s.answerError(nullID, invalidFrame(CodeParseError, "请求不是有效的JSON"))
			return nil
		}
		msg := "请求必须是JSON对象"
		if data = bytes.TrimSpace(data); len(data) > 0 && data[0] == '[' {
			msg = "不支持批量请求，请逐个发送"
		}
		s.answerError(nullID, invalidFrame(CodeInvalidRequest, msg))
		return nil
	}
	id := f.ID
	if id != nil && !validID(id) {
		s.answerError(nullID, invalidFrame(CodeInvalidRequest, "id必须是字符串、数字或null"))
		return nil
	}
	switch {
	case f.Method != nil:
		return s.acceptRequest(f)
	case f.Result != nil || f.Error != nil:
		s.acceptResponse(f)
		return nil
	}
	if id == nil {
		id = nullID
	}
	s.answerError(id, invalidFrame(CodeInvalidRequest, "缺少method"))
	return nil
}

func (s *stream) acceptRequest(f frame) []byte {
	answerID := f.ID
	if answerID == nil {
		answerID = nullID
	}
	var version, method string
	if json.Unmarshal(f.JSONRPC, &version) != nil || version != "2.0" {
		s.answerError(answerID, invalidFrame(CodeInvalidRequest, `jsonrpc必须是"2.0"`))
		return nil
	}
	if json.Unmarshal(f.Method, &method) != nil || method == "" {
		s.answerError(answerID, invalidFrame(CodeInvalidRequest, "method必须是非空字符串"))
		return nil
	}
	if f.Result != nil || f.Error != nil {
		s.answerError(answerID, invalidFrame(CodeInvalidRequest, "请求不能带result或error"))
		return nil
	}
	if f.ID == nil {
		// A notification is never answered, not even with an error, and
		// no method here is one.
		s.log.Debug("rpc notification ignored", "method", method)
		return nil
	}
	params := f.Params
	if string(params) == "null" {
		params = nil
	}
	s.mu.Lock()
	n := s.nextIn
	s.nextIn++
	s.inbound[n] = inbound{id: f.ID, params: params}
	s.mu.Unlock()
	out, _ := json.Marshal(dispatched{JSONRPC: "2.0", ID: n, Method: method})
	return out
}

// take returns and forgets what request n brought.
func (s *stream) take(n uint64) (inbound, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	in, ok := s.inbound[n]
	delete(s.inbound, n)
	return in, ok
}

// acceptResponse hands a backend's answer to the call waiting for it.
// Responses are never answered, whatever is wrong with them.
func (s *stream) acceptResponse(f frame) {
	n, err := strconv.ParseUint(string(f.ID), 10, 64)
	if err != nil {
		s.log.Warn("rpc response with an id this server never used dropped")
		return
	}
	var out outcome
	if f.Error != nil && string(f.Error) != "null" {
		var e jsonrpc2.Error
		if json.Unmarshal(f.Error, &e) != nil {
			e = jsonrpc2.Error{Code: CodeInvalidRequest, Message: "malformed error object"}
		}
		out.err = &e
	} else {
		out.result = f.Result
	}
	s.mu.Lock()
	ch, waiting := s.outbound[n]
	delete(s.outbound, n)
	issued := n < s.nextOut
	s.mu.Unlock()
	switch {
	case waiting:
		ch <- out // buffered, and only this send
	case issued:
		s.log.Info("late reply to a server request dropped", "id", n)
	default:
		s.log.Warn("rpc response with an id this server never used dropped", "id", n)
	}
}

// call sends a request to the backend and waits for its answer until ctx
// ends. It must not run on the connection's reader goroutine, which is the
// one that delivers the answer.
func (s *stream) call(ctx context.Context, method string, params any) (json.RawMessage, error) {
	ch := make(chan outcome, 1)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, jsonrpc2.ErrClosed
	}
	n := s.nextOut
	s.nextOut++
	s.outbound[n] = ch
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.outbound, n)
		s.mu.Unlock()
	}()

	data, err := marshal(struct {
		JSONRPC string `json:"jsonrpc"`
		ID      uint64 `json:"id"`
		Method  string `json:"method"`
		Params  any    `json:"params"`
	}{"2.0", n, method, params})
	if err != nil {
		return nil, err
	}
	if err := s.write(data); err != nil {
		return nil, jsonrpc2.ErrClosed
	}
	select {
	case out := <-ch:
		if out.err != nil {
			return nil, out.err
		}
		return out.result, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-s.done:
		return nil, jsonrpc2.ErrClosed
	}
}

// respond answers the request that arrived with id.
func (s *stream) respond(id json.RawMessage, result any, e *jsonrpc2.Error) error {
	if held, ok := result.(*heldResult); ok {
		// Written as it is, never copied, then its room in the media
		// budget is given back.
		defer held.release()
		return s.writeParts([]byte(`{"jsonrpc":"2.0","id":`), id, []byte(`,"result":`), held.json, []byte("}"))
	}
	resp := response{JSONRPC: "2.0", ID: id, Error: e}
	if e == nil {
		raw, err := marshal(result)
		if err != nil {
			return err
		}
		resp.Result = raw
	}
	data, err := marshal(resp)
	if err != nil {
		return err
	}
	return s.write(data)
}

type response struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Result  json.RawMessage `json:"result,omitempty"`
	Error   *jsonrpc2.Error `json:"error,omitempty"`
}

func (s *stream) answerError(id json.RawMessage, e *jsonrpc2.Error) {
	if err := s.respond(id, nil, e); err != nil {
		s.log.Debug("could not answer a bad frame", "err", err)
	}
}

func invalidFrame(code int64, msg string) *jsonrpc2.Error {
	message := "invalid request"
	if code == CodeParseError {
		message = "parse error"
	}
	return newError(code, message, ErrorData{Status: 400, Msg: msg})
}

// WriteObject implements jsonrpc2.ObjectStream. Answers go through respond;
// this serves anything jsonrpc2 itself sends.
func (s *stream) WriteObject(obj any) error {
	data, err := marshal(obj)
	if err != nil {
		return err
	}
	return s.write(data)
}

// write sends one text frame within writeWait. A write that fails leaves
// the WebSocket unusable, so the connection is closed.
func (s *stream) write(data []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.ws.SetWriteDeadline(time.Now().Add(s.writeWait))
	if err := s.ws.WriteMessage(websocket.TextMessage, data); err != nil {
		s.ws.Close()
		return err
	}
	return nil
}

// writeParts is write for a message given in parts, sent without joining
// them.
func (s *stream) writeParts(parts ...[]byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.ws.SetWriteDeadline(time.Now().Add(s.writeWait))
	w, err := s.ws.NextWriter(websocket.TextMessage)
	for _, p := range parts {
		if err != nil {
			break
		}
		_, err = w.Write(p)
	}
	if err == nil {
		err = w.Close()
	}
	if err != nil {
		s.ws.Close()
	}
	return err
}

// Close implements jsonrpc2.ObjectStream.
func (s *stream) Close() error {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.done)
	}
	s.mu.Unlock()
	return s.ws.Close()
}

// validID reports whether raw is a JSON-RPC id: a string, a number or null.
func validID(raw json.RawMessage) bool {
	if len(raw) == 0 {
		return false
	}
	switch c := raw[0]; {
	case c == '"', c == '-', c >= '0' && c <= '9':
		return true
	}
	return string(raw) == "null"
}

// marshal encodes v without HTML escaping, so URLs keep their '&'.
func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
