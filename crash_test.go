package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/100steps/wxappliance/appliance/poll"
	"github.com/100steps/wxappliance/appliance/sandbox"
	"github.com/100steps/wxappliance/callback"
)

var testUsers = []string{"oSBX_zhangsan", "oSBX_xiaoming", "oSBX_ahua", "oSBX_lisi"}

// killUnderLoad calls work on n goroutines in a loop (w is the goroutine,
// i its call) and kills p with SIGKILL in the middle of it, once 16n calls
// have succeeded (an event, not a time, so a slow machine only takes
// longer). It returns when the process is dead and every goroutine has
// stopped.
func killUnderLoad(t *testing.T, p *process, n int, work func(w, i int) bool) {
	t.Helper()
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var done atomic.Int64
	for w := range n {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				if work(w, i) {
					done.Add(1)
				}
			}
		})
	}
	poll.Until(t, "calls to succeed before the kill", func() bool { return done.Load() >= int64(16*n) })
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.done
	p.done <- nil
	stop()
	wg.Wait()
}

// TestCrashKeepsSessionsAndToken kills the binary with SIGKILL while users
// are logging in, restarts it on the same data directory, and checks that
// every login that had completed still works and that the stored
// access_token is reused. Several cycles.
func TestCrashKeepsSessionsAndToken(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary through kill cycles")
	}
	dir := filepath.Join(t.TempDir(), "data")
	addr := freePort(t)
	// Eight browsers log in from one address as fast as they can.
	config := writeSandboxConfig(t, addr, dir, configLines{oauth: []string{"login_rate = 0"}})

	type session struct{ id, openid string }
	var (
		mu       sync.Mutex
		sessions []session
	)
	for cycle := range 3 {
		p := start(t, config, addr)
		counts := p.counts(t)
		if cycle > 0 {
			// The token and ticket stored before the kill are reused.
			if n := counts["cgi-bin/stable_token"] + counts["cgi-bin/token"]; n != 0 {
				t.Fatalf("cycle %d: %d token fetches after restart, want 0", cycle, n)
			}
			if n := counts["cgi-bin/ticket/getticket"]; n != 0 {
				t.Fatalf("cycle %d: %d ticket fetches after restart, want 0", cycle, n)
			}
			mu.Lock()
			for _, s := range sessions {
				mustOpenID(t, p.base, s.id, s.openid)
			}
			t.Logf("cycle %d: all %d earlier sessions survived", cycle, len(sessions))
			mu.Unlock()
		}

		// Users log in from 8 browsers at once; SIGKILL lands mid-stream.
		killUnderLoad(t, p, 8, func(w, i int) bool {
			openid := testUsers[(w+i)%len(testUsers)]
			id, err := login(p.base, openid)
			if err != nil {
				return false // the process is being killed
			}
			mu.Lock()
			sessions = append(sessions, session{id, openid})
			mu.Unlock()
			return true
		})
		mu.Lock()
		n := len(sessions)
		mu.Unlock()
		if n == 0 {
			t.Fatalf("cycle %d: no login completed before the kill", cycle)
		}
	}
	p := start(t, config, addr)
	for _, s := range sessions {
		mustOpenID(t, p.base, s.id, s.openid)
	}
	t.Logf("%d sessions across 3 kills all valid", len(sessions))
}

func TestSecondBinaryOnSameDataDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	addr := freePort(t)
	start(t, writeSandboxConfig(t, addr, dir), addr)

	second := writeSandboxConfig(t, freePort(t), dir)
	out, err := execOutput(binary(t), "serve", "-config", second)
	if err == nil {
		t.Fatal("second process on the same data dir started")
	}
	if !strings.Contains(out, "in use by another process") || !strings.Contains(out, dir) {
		t.Fatalf("unclear message: %s", out)
	}
}

func TestBackupRestoreRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	addr, admin := freePort(t), freePort(t)
	config := writeSandboxConfig(t, addr, dir, configLines{server: []string{fmt.Sprintf("admin_listen = %q", admin)}})
	p := start(t, config, addr)
	id, err := login(p.base, "oSBX_xiaoming")
	if err != nil {
		t.Fatal(err)
	}

	// Online: the running appliance holds the directory.
	online := filepath.Join(t.TempDir(), "online.backup")
	out, err := execOutput(binary(t), "backup", "-config", config, "-o", online)
	if err != nil || !strings.Contains(out, "online") {
		t.Fatalf("online backup: %v\n%s", err, out)
	}
	if info, err := os.Stat(online); err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v %v, want mode 0600: it holds every user's tokens", info.Mode(), err)
	}
	// The backup is on the admin listener only, and needs the admin token.
	token, err := os.ReadFile(filepath.Join(dir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		base, token string
		want        int
	}{
		{p.base, string(token), http.StatusNotFound},
		{"http://" + admin, "not-the-token", http.StatusUnauthorized},
		{"http://" + admin, "", http.StatusUnauthorized},
	} {
		req, _ := http.NewRequest(http.MethodGet, tt.base+"/admin/backup", nil)
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(tt.token))
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != tt.want {
			t.Fatalf("%s/admin/backup: %v %v, want %d", tt.base, err, resp, tt.want)
		}
		resp.Body.Close()
	}
	// Without an admin listener there is no online backup, and the error
	// says what to do.
	noAdmin := writeSandboxConfig(t, addr, dir)
	if out, err := execOutput(binary(t), "backup", "-config", noAdmin, "-o", filepath.Join(t.TempDir(), "x")); err == nil || !strings.Contains(out, "admin_listen") {
		t.Fatalf("backup without admin listener: %v\n%s", err, out)
	}

	// Graceful stop removes the admin token; an offline backup then reads
	// the directory itself.
	p.cmd.Process.Signal(syscall.SIGTERM)
	if err := <-p.done; err != nil {
		t.Fatalf("SIGTERM exit: %v\n%s", err, p.stderr)
	}
	p.done <- nil
	if _, err := os.Stat(filepath.Join(dir, "admin.token")); !os.IsNotExist(err) {
		t.Fatalf("admin token left behind: %v", err)
	}
	offline := filepath.Join(t.TempDir(), "offline.backup")
	if out, err := execOutput(binary(t), "backup", "-config", config, "-o", offline); err != nil || !strings.Contains(out, "offline") {
		t.Fatalf("offline backup: %v\n%s", err, out)
	}

	for name, file := range map[string]string{"online": online, "offline": offline} {
		t.Run(name, func(t *testing.T) {
			restored := filepath.Join(t.TempDir(), "restored")
			raddr := freePort(t)
			rconfig := writeSandboxConfig(t, raddr, restored)
			if out, err := execOutput(binary(t), "restore", "-config", rconfig, "-i", file); err != nil {
				t.Fatalf("restore: %v\n%s", err, out)
			}
			// Restoring over data is refused.
			if out, err := execOutput(binary(t), "restore", "-config", rconfig, "-i", file); err == nil {
				t.Fatalf("restore into a non-empty dir succeeded: %s", out)
			}
			rp := start(t, rconfig, raddr)
			mustOpenID(t, rp.base, id, "oSBX_xiaoming")
			if n := rp.counts(t)["cgi-bin/stable_token"]; n != 0 {
				t.Fatalf("restored appliance fetched the token %d times, want 0", n)
			}
		})
	}
}

// TestCrashKeepsCallbackAnswers kills the binary with SIGKILL while WeChat
// pushes messages, restarts it on the same data directory, and repeats
// every message that had been answered before the kill, as WeChat's retry
// would: each gets the answer it got before, byte for byte (an encrypted
// reply has a fresh nonce, so a second dispatch could not match), and a
// new message is still answered afresh.
func TestCrashKeepsCallbackAnswers(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary through a kill")
	}
	dir := filepath.Join(t.TempDir(), "data")
	addr := freePort(t)
	config := writeSandboxConfig(t, addr, dir, configLines{tail: []string{
		"[[callback.rules.keywords]]", `keyword = "ping"`, `content = "pong"`,
	}})
	crypter, err := callback.NewCrypter(sandbox.DefaultEncodingAESKey, sandbox.DefaultAppID)
	if err != nil {
		t.Fatal(err)
	}
	var msgID atomic.Int64
	push := func(base string, req pushRequest) (string, error) {
		resp, err := http.Post(base+"/callback?"+req.query, "text/xml", strings.NewReader(req.body))
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err == nil && resp.StatusCode != 200 {
			err = fmt.Errorf("HTTP %d: %s", resp.StatusCode, b)
		}
		return string(b), err
	}
	newRequest := func() pushRequest {
		return sealPush(t, crypter, msgID.Add(1))
	}

	p := start(t, config, addr)
	type answered struct {
		req    pushRequest
		answer string
	}
	var (
		mu   sync.Mutex
		sent []answered
	)
	killUnderLoad(t, p, 4, func(int, int) bool {
		req := newRequest()
		answer, err := push(p.base, req)
		if err != nil {
			return false // the process is being killed
		}
		mu.Lock()
		sent = append(sent, answered{req, answer})
		mu.Unlock()
		return true
	})
	if len(sent) == 0 {
		t.Fatal("no message was answered before the kill")
	}

	p = start(t, config, addr)
	for _, a := range sent {
		if !strings.HasPrefix(a.answer, "<xml>") {
			t.Fatalf("first answer %q is not an encrypted reply", a.answer)
		}
		again, err := push(p.base, a.req)
		if err != nil {
			t.Fatal(err)
		}
		if again != a.answer {
			t.Fatalf("retry after the crash answered\n%s\nwant, byte for byte,\n%s", again, a.answer)
		}
	}
	fresh := newRequest()
	first, err := push(p.base, fresh)
	if err != nil {
		t.Fatal(err)
	}
	if second, err := push(p.base, fresh); err != nil || second != first || !strings.HasPrefix(first, "<xml>") {
		t.Fatalf("a new message after the restart: %q then %q, %v", first, second, err)
	}
	t.Logf("%d answers survived the kill byte for byte", len(sent))
}

// pushRequest is a signed push as WeChat sends it, and as its retries
// repeat it.
type pushRequest struct{ query, body string }

// sealPush is a safe-mode text message "ping" with msgID, to the sandbox's
// callback credentials.
func sealPush(t *testing.T, c *callback.Crypter, msgID int64) pushRequest {
	t.Helper()
	now := time.Now().Unix()
	xml := fmt.Sprintf(`<xml><ToUserName><![CDATA[gh_sandbox000000]]></ToUserName><FromUserName><![CDATA[oSBX_zhangsan]]></FromUserName><CreateTime>%d</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[ping]]></Content><MsgId>%d</MsgId></xml>`, now, msgID)
	encrypt, err := c.Encrypt(rand.Reader, []byte(xml))
	if err != nil {
		t.Fatal(err)
	}
	ts, nonce := fmt.Sprint(now), fmt.Sprint(msgID)
	q := callback.Query{
		Signature:    callback.Signature(sandbox.DefaultCallbackToken, ts, nonce),
		MsgSignature: callback.Signature(sandbox.DefaultCallbackToken, ts, nonce, encrypt),
		Timestamp:    ts, Nonce: nonce, EncryptType: "aes", OpenID: "oSBX_zhangsan",
	}
	return pushRequest{
		query: q.Values().Encode(),
		body:  `<xml><ToUserName><![CDATA[gh_sandbox000000]]></ToUserName><Encrypt><![CDATA[` + encrypt + `]]></Encrypt></xml>`,
	}
}
