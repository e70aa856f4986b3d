package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/100steps/wxappliance/appliance/sandbox"
)

const memoryTestKey = "memory-test-key-0123456789"

// 300 media.get of a 10 MiB file pipelined on one WebSocket: the media
// budget bounds what the process holds, however many calls wait. The peak
// resident set of the real binary, sandbox included, stays under 150 MiB
// (71 MiB measured with the defaults; 712 MiB before the budget). Memory,
// not time, is asserted: a busy machine only makes it slower. The 12
// calls over the connection's queue (32 running + 256 waiting) are
// answered busy at once.
func TestMediaGetMemoryBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 4 GiB through the real binary")
	}
	const calls = 300
	const limitMiB = 150
	addr := freePort(t)
	config := filepath.Join(t.TempDir(), "config.toml")
	cfg := fmt.Sprintf(`[server]
listen = %q
log_level = "warn"
shutdown_timeout = "3s"
[storage]
dir = %q
[wechat]
sandbox = true
[oauth]
allowed_return_hosts = ["127.0.0.1"]
[media]
max_bytes = %d
# The calls wait for room in the budget; on a busy machine that can take
# long, and a call given up on would prove nothing.
timeout = "10m"
[[rpc.keys]]
name = "memory"
key = %q
`, addr, t.TempDir(), 16<<20, memoryTestKey)
	if err := os.WriteFile(config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p := start(t, config, addr)

	dialer := websocket.Dialer{ReadBufferSize: 1 << 20, HandshakeTimeout: 10 * time.Second}
	ws, _, err := dialer.Dial("ws://"+addr+"/rpc", http.Header{"Authorization": {"Bearer " + memoryTestKey}})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	// Pipelined: every request is written before any answer is read.
	sent := make(chan error, 1)
	go func() {
		for i := range calls {
			req := fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"media.get","params":{"media_id":%q}}`, i, sandbox.MediaBig)
			if err := ws.WriteMessage(websocket.TextMessage, []byte(req)); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()

	ok, busy := 0, 0
	wantLen := len(`"media_data":""`) + (sandbox.MediaBigSize+2)/3*4
	for range calls {
		ws.SetReadDeadline(time.Now().Add(10 * time.Minute))
		kind, n, head, err := readAnswer(ws)
		if err != nil {
			t.Fatalf("after %d ok, %d busy: %v", ok, busy, err)
		}
		switch kind {
		case "result":
			if n < wantLen {
				t.Fatalf("a result of %d bytes, want at least %d: %s", n, wantLen, head)
			}
			ok++
		case "busy":
			busy++
		default:
			t.Fatalf("unexpected answer: %s", head)
		}
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	hwm := vmHWM(t, p.cmd.Process.Pid)
	t.Logf("%d calls: %d results, %d busy; VmHWM %d MiB", calls, ok, busy, hwm>>20)
	// Most calls must really move the file: a server answering busy to
	// everything would pass the memory bound trivially.
	if ok < calls/2 {
		t.Fatalf("only %d of %d calls answered the file", ok, calls)
	}
	if hwm > limitMiB<<20 {
		t.Fatalf("VmHWM %d MiB, want under %d MiB", hwm>>20, limitMiB)
	}
}

// readAnswer reads one message without holding it: the answer's kind
// ("result", "busy" or "other"), its length and its first bytes.
func readAnswer(ws *websocket.Conn) (kind string, n int, head []byte, err error) {
	_, r, err := ws.NextReader()
	if err != nil {
		return "", 0, nil, err
	}
	br := bufio.NewReaderSize(r, 1<<20)
	head, _ = br.Peek(512)
	head = bytes.Clone(head)
	rest, err := io.Copy(io.Discard, br)
	if err != nil {
		return "", 0, head, err
	}
	n = int(rest)
	switch {
	case bytes.Contains(head, []byte(`"result":{"media_data":"`)):
		return "result", n, head, nil
	case n < 512:
		var e struct {
			Error *struct {
				Code int64 `json:"code"`
			} `json:"error"`
		}
		if json.Unmarshal(head, &e) == nil && e.Error != nil && e.Error.Code == -32005 {
			return "busy", n, head, nil
		}
	}
	return "other", n, head, nil
}

// vmHWM is the peak resident set of process pid, in bytes.
func vmHWM(t *testing.T, pid int) int64 {
	t.Helper()
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc status")
	return 0
}
