package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/100steps/wxappliance/appliance"
	"github.com/100steps/wxappliance/kv"
)

// backup writes a backup of storage.dir to the -o file. When an appliance is
// running on the directory (which it holds locked), the backup is taken
// online through it, authorized by the admin token it keeps in the
// directory; otherwise the directory is read directly.
func (m *Main) backup(ctx context.Context, args []string) error {
	fs, path := m.flags("backup")
	out := fs.String("o", "", "file to write the backup to (required)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" {
		return errors.New("backup: -o FILE is required")
	}
	cfg, err := appliance.LoadConfig(*path, m.Getenv)
	if err != nil {
		return err
	}
	if cfg.Storage.Shared() {
		return errRedisBackup
	}
	if _, err := os.Stat(cfg.Storage.Dir); err != nil {
		return fmt.Errorf("backup: storage.dir %q: %w", cfg.Storage.Dir, err)
	}
	// Write beside the target and rename, so a failed backup never leaves a
	// truncated file where a good one is expected.
	tmp := *out + ".partial"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	online, err := backupTo(ctx, cfg, f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("backup: %w", err)
	}
	if err := os.Rename(tmp, *out); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	how := "offline"
	if online {
		how = "online, from the running appliance"
	}
	fmt.Fprintf(m.Stdout, "backup of %s written to %s (%s)\n", cfg.Storage.Dir, *out, how)
	return nil
}

// errRedisBackup says where the backups of a Redis store come from.
var errRedisBackup = errors.New("storage.backend is redis: back Redis up with its own means (RDB snapshots, AOF; see the README), not with wxappliance")

func backupTo(ctx context.Context, cfg appliance.Config, w io.Writer) (online bool, err error) {
	store, err := kv.OpenBadger(cfg.Storage.Dir, cfg.Storage.BadgerOptions(nil))
	if err == nil {
		defer store.Close()
		return false, store.Backup(ctx, w)
	}
	if !errors.Is(err, kv.ErrLocked) {
		return false, err
	}
	token, terr := appliance.ReadAdminToken(cfg.Storage.Dir)
	if terr != nil {
		return false, fmt.Errorf("%w; and no admin token to ask the running appliance: %w", err, terr)
	}
	if cfg.Server.AdminListen == "" {
		return false, fmt.Errorf("%w; the running appliance has no admin listener (server.admin_listen is empty) to take an online backup through: set it, or stop the appliance for an offline backup", err)
	}
	url := "http://" + appliance.LoopbackAddr(cfg.Server.AdminListen) + "/admin/backup"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return true, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	// The backup streams for as long as it takes, but a wedged appliance
	// must not hang the command before the first byte.
	client := &http.Client{Transport: &http.Transport{ResponseHeaderTimeout: 30 * time.Second}}
	resp, err := client.Do(req)
	if err != nil {
		return true, fmt.Errorf("asking the running appliance at %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return true, fmt.Errorf("the running appliance answered %d: %s", resp.StatusCode, body)
	}
	if _, err := io.Copy(w, resp.Body); err != nil {
		return true, fmt.Errorf("receiving the backup: %w", err)
	}
	return true, nil
}
