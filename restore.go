package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/100steps/wxappliance/appliance"
	"github.com/100steps/wxappliance/kv"
)

// restore loads a backup into an empty storage.dir.
func (m *Main) restore(args []string) error {
	fs, path := m.flags("restore")
	in := fs.String("i", "", "backup file to restore (required)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *in == "" {
		return errors.New("restore: -i FILE is required")
	}
	cfg, err := appliance.LoadConfig(*path, m.Getenv)
	if err != nil {
		return err
	}
	if cfg.Storage.Shared() {
		return fmt.Errorf("restore: %w; to move a Badger directory into Redis, use migrate", errRedisBackup)
	}
	f, err := os.Open(*in)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	defer f.Close()
	if err := kv.Restore(cfg.Storage.Dir, f, cfg.Storage.BadgerOptions(nil)); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	fmt.Fprintf(m.Stdout, "restored %s into %s\n", *in, cfg.Storage.Dir)
	return nil
}
