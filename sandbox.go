package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/100steps/wxappliance/appliance"
	"github.com/100steps/wxappliance/appliance/sandbox"
)

// sandbox serves the fake WeChat alone, so that several appliances (and
// tests of them) share one: point their wechat.api_base and
// wechat.oauth_base at it, with wechat.sandbox off and the sandbox's
// credentials as wechat.app_id and wechat.app_secret.
func (m *Main) sandbox(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("sandbox", flag.ContinueOnError)
	fs.SetOutput(m.Stderr)
	listen := fs.String("listen", "127.0.0.1:9000", "address to serve the fake WeChat on")
	path := fs.String("config", "", "an appliance config whose app credentials and callback the sandbox uses (optional)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(m.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	opts := sandbox.Options{Logger: log}
	if *path != "" {
		cfg, err := appliance.LoadConfig(*path, m.Getenv)
		if err != nil {
			return err
		}
		opts.AppID, opts.AppSecret = cfg.WeChat.AppID, cfg.WeChat.AppSecret
		opts.Callback = callbackTarget(cfg)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("sandbox -listen %q: %w", *listen, err)
	}
	srv := &http.Server{Handler: sandbox.New(opts), ReadHeaderTimeout: 5 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	base := "http://" + appliance.LoopbackAddr(ln.Addr().String())
	log.Warn("SANDBOX: a fake WeChat for tests and demos; set wechat.api_base and wechat.oauth_base to it",
		"addr", ln.Addr().String(), "api_base", base, "push", base+"/push")
	if m.Started != nil {
		m.Started(ln.Addr().String())
	}
	select {
	case err := <-done:
		return fmt.Errorf("sandbox: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = srv.Shutdown(shutdownCtx)
	if serveErr := <-done; !errors.Is(serveErr, http.ErrServerClosed) {
		err = errors.Join(err, serveErr)
	}
	log.Info("sandbox stopped")
	return err
}

// callbackTarget is the appliance's callback as cfg describes it, for the
// push page; zero when its callback is off.
func callbackTarget(cfg appliance.Config) sandbox.CallbackTarget {
	if cfg.Callback.Token == "" {
		return sandbox.CallbackTarget{}
	}
	base := strings.TrimRight(cfg.Server.BaseURL, "/")
	if base == "" {
		base = "http://" + appliance.LoopbackAddr(cfg.Server.Listen)
	}
	return sandbox.CallbackTarget{
		URL:            base + cfg.Callback.Path,
		Token:          cfg.Callback.Token,
		EncodingAESKey: cfg.Callback.EncodingAESKey,
	}
}
