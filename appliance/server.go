package appliance

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
)

// Serve runs the appliance until ctx ends, then shuts down gracefully: stop
// accepting, drain in-flight requests, stop background refreshers, close the
// store. started, when not nil, is called with the listening address once
// requests can be served.
func Serve(ctx context.Context, cfg Config, log *slog.Logger, started func(addr string)) error {
	ln, err := net.Listen("tcp", cfg.Server.Listen)
	if err != nil {
		return fmt.Errorf("server.listen %q: %w", cfg.Server.Listen, err)
	}
	addr := ln.Addr().String()
	cfg = resolveAddresses(cfg, addr)
	if cfg.WeChat.Sandbox {
		log.Warn("SANDBOX MODE: not talking to WeChat; users, tokens and media are fake",
			"sandbox", cfg.Server.BaseURL+"/sandbox/")
	}
	a, err := New(cfg, Options{Logger: log})
	if err != nil {
		ln.Close()
		return err
	}
	srv := &http.Server{
		Handler:           a.Handler(),
		ReadHeaderTimeout: cfg.Server.ReadHeaderTimeout.D(),
		ReadTimeout:       cfg.Server.ReadTimeout.D(),
		WriteTimeout:      cfg.Server.WriteTimeout.D(),
		IdleTimeout:       cfg.Server.IdleTimeout.D(),
		MaxHeaderBytes:    cfg.Server.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	srv.RegisterOnShutdown(a.drainRPC) // hijacked RPC connections are not Shutdown's
	a.Start()
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	log.Info("listening", "addr", addr, "base_url", cfg.Server.BaseURL, "storage", cfg.Storage.Dir)
	if started != nil {
		started(addr)
	}

	select {
	case err := <-serveErr:
		a.Close()
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down", "drain_timeout", cfg.Server.ShutdownTimeout.D())
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.Server.ShutdownTimeout.D())
	defer cancel()
	shutdownErr := srv.Shutdown(shutdownCtx)
	if shutdownErr != nil {
		srv.Close()
	}
	if err := <-serveErr; err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Warn("serve ended with an error", "err", err)
	}
	closeErr := a.Close()
	log.Info("stopped")
	return errors.Join(shutdownErr, closeErr)
}

// resolveAddresses fills server.base_url from the listening address when it
// is not set, and in sandbox mode points the upstream client at the
// appliance's own /sandbox/ over loopback and the browser's authorize page
// at base_url.
func resolveAddresses(cfg Config, addr string) Config {
	self := LoopbackAddr(addr)
	if cfg.Server.BaseURL == "" {
		cfg.Server.BaseURL = "http://" + self
	}
	cfg.Server.BaseURL = strings.TrimRight(cfg.Server.BaseURL, "/")
	if cfg.WeChat.Sandbox {
		cfg.WeChat.APIBase = "http://" + self + "/sandbox"
		cfg.WeChat.APIFallback = nil
		cfg.WeChat.OAuthBase = cfg.Server.BaseURL + "/sandbox"
	}
	return cfg
}

// LoopbackAddr turns a wildcard listening address into one this process can
// dial.
func LoopbackAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	ip := net.ParseIP(host)
	switch {
	case host == "" || (ip != nil && ip.IsUnspecified() && ip.To4() != nil):
		host = "127.0.0.1"
	case ip != nil && ip.IsUnspecified():
		host = "::1"
	}
	return net.JoinHostPort(host, port)
}
