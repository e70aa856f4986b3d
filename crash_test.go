package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var testUsers = []string{"oSBX_zhangsan", "oSBX_xiaoming", "oSBX_ahua", "oSBX_lisi"}

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
		ctx, stop := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for w := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ctx.Err() == nil; i++ {
					openid := testUsers[(w+i)%len(testUsers)]
					id, err := login(p.base, openid)
					if err != nil {
						continue // the process is being killed
					}
					mu.Lock()
					sessions = append(sessions, session{id, openid})
					mu.Unlock()
				}
			}()
		}
		time.Sleep(700 * time.Millisecond)
		if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-p.done
		p.done <- nil
		stop()
		wg.Wait()
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
