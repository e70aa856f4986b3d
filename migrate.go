package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/100steps/wxappliance/appliance"
	"github.com/100steps/wxappliance/kv"
)

// migrate copies a Badger data directory's live records, with the time
// they have left, into the Redis store the config names: moving from one
// appliance to several loses no login, no stored token and no dedupe
// record. Records already in Redis are kept, so running it twice is safe.
func (m *Main) migrate(ctx context.Context, args []string) error {
	fs, path := m.flags("migrate")
	from := fs.String("from", "", "the Badger data directory to copy from (required; the appliance using it must be stopped)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *from == "" {
		return errors.New("migrate: -from DIR is required")
	}
	cfg, err := appliance.LoadConfig(*path, m.Getenv)
	if err != nil {
		return err
	}
	if !cfg.Storage.Shared() {
		return errors.New(`migrate: the config's storage.backend must be "redis": migrate copies a Badger directory into Redis`)
	}
	src, err := kv.OpenBadger(*from, kv.BadgerOptions{})
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer src.Close()
	dst, err := appliance.OpenRedis(cfg.Storage.Redis, nil)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer dst.Close()
	if err := dst.Ping(ctx); err != nil {
		return fmt.Errorf("migrate: Redis at %s: %w", dst, err)
	}
	n, err := kv.Migrate(ctx, src, dst)
	if err != nil {
		return fmt.Errorf("migrate: after %d records: %w", n, err)
	}
	fmt.Fprintf(m.Stdout, "copied %d live records from %s into %s\n", n, *from, dst)
	return nil
}
