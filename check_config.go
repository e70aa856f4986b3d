package main

import (
	"fmt"

	"github.com/100steps/wxappliance/appliance"
)

// checkConfig validates a config file and says what it would run.
func (m *Main) checkConfig(args []string) error {
	fs, path := m.flags("check-config")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := appliance.LoadConfig(*path, m.Getenv)
	if err != nil {
		return err
	}
	mode := "WeChat app " + cfg.WeChat.AppID
	if cfg.WeChat.Sandbox {
		mode = "sandbox (fake WeChat)"
	}
	storage := cfg.Storage.Dir
	if cfg.Storage.Shared() {
		storage = "Redis, keys under " + cfg.Storage.Redis.Prefix
	}
	fmt.Fprintf(m.Stdout, "%s: ok, %s, storage in %s\n", *path, mode, storage)
	return nil
}
