package client

import (
	"encoding/json"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// stream is the jsonrpc2.ObjectStream of a client connection: one JSON
// object per text message, a deadline on every write (jsonrpc2's own
// websocket stream sets none), and a read deadline that every frame, ping
// and pong pushes back, so a dead appliance is noticed.
type stream struct {
	ws        *websocket.Conn
	writeWait time.Duration
	readWait  time.Duration
	mu        sync.Mutex // one writer at a time
}

func newStream(ws *websocket.Conn, writeWait, readWait time.Duration) *stream {
	s := &stream{ws: ws, writeWait: writeWait, readWait: readWait}
	extend := func() { ws.SetReadDeadline(time.Now().Add(readWait)) }
	ws.SetPongHandler(func(string) error { extend(); return nil })
	ws.SetPingHandler(func(data string) error {
		extend()
		err := ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(writeWait))
		if err == websocket.ErrCloseSent {
			return nil
		}
		return err
	})
	return s
}

func (s *stream) ReadObject(v any) error {
	s.ws.SetReadDeadline(time.Now().Add(s.readWait))
	_, r, err := s.ws.NextReader()
	if err != nil {
		return err
	}
	return json.NewDecoder(r).Decode(v)
}

func (s *stream) WriteObject(v any) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ws.SetWriteDeadline(time.Now().Add(s.writeWait))
	if err := s.ws.WriteJSON(v); err != nil {
		s.ws.Close()
		return err
	}
	return nil
}

func (s *stream) Close() error { return s.ws.Close() }
