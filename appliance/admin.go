package appliance

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/100steps/wxappliance/appliance/wire"
	"github.com/100steps/wxappliance/oauth"
)

// The admin listener (server.admin_listen, loopback by default) serves
// what is for the operator and never for the public: backups, which hold
// every user's WeChat tokens, metrics, the status page and pprof. The
// public listener answers 404 there.

// AdminTokenFile is the file in storage.dir holding the token that
// authorizes /admin/backup. It is written at start with mode 0600 and
// removed at shutdown: whoever may read the data directory may take a
// backup of it, and nobody else, even on the admin listener, which any
// local user can reach.
const AdminTokenFile = "admin.token"

// backuper is what /admin/backup needs from the store.
type backuper interface {
	Backup(ctx context.Context, w io.Writer) error
}

// writeAdminToken creates a fresh token file in dir.
func writeAdminToken(dir string) (string, error) {
	token := oauth.NewSecret() + oauth.NewSecret()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("storage.dir %q: %w", dir, err)
	}
	path := filepath.Join(dir, AdminTokenFile)
	if err := os.WriteFile(path, []byte(token+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	return token, nil
}

// ReadAdminToken reads the token of the appliance running on dir.
func ReadAdminToken(dir string) (string, error) {
	data, err := os.ReadFile(filepath.Join(dir, AdminTokenFile))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(data)), nil
}

// AdminHandler serves the admin listener.
func (a *Appliance) AdminHandler() http.Handler { return a.adminHandler }

func (a *Appliance) adminRoutes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /admin/backup", a.adminBackup)
	mux.HandleFunc("GET /admin/menu", a.adminMenuShow)
	mux.HandleFunc("PUT /admin/menu", a.adminMenuApply)
	mux.HandleFunc("DELETE /admin/menu", a.adminMenuDelete)
	a.opsRoutes(mux) // /metrics, the status page, pprof; see ops.go
	mux.HandleFunc("/", notFound)
	return recoverPanics(a.log, accessLog(a.log, nil, mux))
}

// adminBackup streams an online backup of the store.
func (a *Appliance) adminBackup(w http.ResponseWriter, r *http.Request) {
	if !a.adminAuthorized(w, r) {
		return
	}
	b, ok := a.store.(backuper)
	if !ok {
		writeEnvelope(w, http.StatusNotImplemented, "此存储不支持备份")
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Cache-Control", "no-store")
	// The response may take longer than server.write_timeout.
	rc := http.NewResponseController(w)
	rc.SetWriteDeadline(time.Time{})
	if err := b.Backup(r.Context(), w); err != nil {
		a.log.Warn("backup failed", "err", err)
		panic(http.ErrAbortHandler)
	}
	a.log.Info("backup served", "remote", r.RemoteAddr)
}

// adminAuthorized answers 401 unless r carries the admin token.
func (a *Appliance) adminAuthorized(w http.ResponseWriter, r *http.Request) bool {
	got, ok := wire.BearerToken(r)
	if a.adminToken == "" || !ok || subtle.ConstantTimeCompare([]byte(got), []byte(a.adminToken)) != 1 {
		writeEnvelope(w, http.StatusUnauthorized, "需要管理令牌 (admin token required)")
		return false
	}
	return true
}

// removeAdminToken is called at shutdown.
func (a *Appliance) removeAdminToken() {
	if a.adminToken == "" {
		return
	}
	path := filepath.Join(a.cfg.Storage.Dir, AdminTokenFile)
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		a.log.Warn("could not remove the admin token", "path", path, "err", err)
	}
}
