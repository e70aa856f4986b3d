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
// store. started, when not nil, is called with the public listening address
// once requests can be served. Of opts, Logger and Version are used.
func Serve(ctx context.Context, cfg Config, opts Options, started func(addr string)) error {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ln, err := net.Listen("tcp", cfg.Server.Listen)
	if err != nil {
		return fmt.Errorf("server.listen %q: %w", cfg.Server.Listen, err)
	}
	var adminLn net.Listener
	if cfg.Server.AdminListen != "" {
		if adminLn, err = net.Listen("tcp", cfg.Server.AdminListen); err != nil {
			ln.Close()
			return fmt.Errorf("server.admin_listen %q: %w (set it to another port, or to \"\" to turn the admin listener off)", cfg.Server.AdminListen, err)
		}
	}
	addr := ln.Addr().String()
	cfg = resolveAddresses(cfg, addr)
	if cfg.WeChat.Sandbox {
		log.Warn("SANDBOX MODE: not talking to WeChat; users, tokens and media are fake",
			"sandbox", cfg.Server.BaseURL+"/sandbox/")
	}
	a, err := New(cfg, Options{Logger: log, Version: opts.Version})
	if err != nil {
		ln.Close()
		if adminLn != nil {
			adminLn.Close()
		}
		return err
	}
	srv := newHTTPServer(cfg.Server, a.Handler(), log)
	srv.RegisterOnShutdown(a.drainRPC) // hijacked RPC connections are not Shutdown's
	servers := []*http.Server{srv}
	a.Start()
	serveErr := make(chan error, 2)
	go func() { serveErr <- srv.Serve(ln) }()
	log.Info("listening", "addr", addr, "base_url", cfg.Server.BaseURL, "storage", cfg.Storage.Dir)
	if adminLn != nil {
		admin := newHTTPServer(cfg.Server, a.AdminHandler(), log)
		admin.WriteTimeout = 0 // a backup streams for as long as it takes
		servers = append(servers, admin)
		go func() { serveErr <- admin.Serve(adminLn) }()
		logAdmin(log, adminLn.Addr())
	}
	if started != nil {
		started(addr)
	}

	select {
	case err := <-serveErr:
		shutdown(context.Background(), servers)
		a.Close()
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down", "drain_timeout", cfg.Server.ShutdownTimeout.D())
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.Server.ShutdownTimeout.D())
	defer cancel()
	shutdownErr := shutdown(shutdownCtx, servers)
	for range servers {
		if err := <-serveErr; err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("serve ended with an error", "err", err)
		}
	}
	closeErr := a.Close()
	log.Info("stopped")
	return errors.Join(shutdownErr, closeErr)
}

func newHTTPServer(cfg ServerConfig, h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout.D(),
		ReadTimeout:       cfg.ReadTimeout.D(),
		WriteTimeout:      cfg.WriteTimeout.D(),
		IdleTimeout:       cfg.IdleTimeout.D(),
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
}

// shutdown drains every server until ctx ends, then closes what is left.
func shutdown(ctx context.Context, servers []*http.Server) error {
	var errs []error
	for _, srv := range servers {
		if err := srv.Shutdown(ctx); err != nil {
			srv.Close()
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// logAdmin says where the admin listener is, and warns when it is reachable
// from other machines: a backup holds every user's WeChat tokens.
func logAdmin(log *slog.Logger, addr net.Addr) {
	if tcp, ok := addr.(*net.TCPAddr); ok && !tcp.IP.IsLoopback() {
		log.Warn("the admin listener is not on loopback: anyone who reaches it sees the status page and metrics; keep it behind a firewall", "admin_addr", addr.String())
		return
	}
	log.Info("admin listening", "admin_addr", addr.String())
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
