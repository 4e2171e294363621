package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/stickyd/stickyd/agent"
	"github.com/stickyd/stickyd/api"
	"github.com/stickyd/stickyd/config"
	"github.com/stickyd/stickyd/haproxy"
	"github.com/stickyd/stickyd/metrics"
	"github.com/stickyd/stickyd/spoe"
	"github.com/stickyd/stickyd/store"
	"github.com/stickyd/stickyd/store/redis"
)

// serve runs until SIGINT or SIGTERM, then shuts down gracefully.
func serve(path string, stderr io.Writer) int {
	cfg, err := config.Load(path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	log := newLogger(&cfg, stderr)
	warnTokenFile(&cfg, log)
	if err := api.CheckListen(cfg.APIListen, cfg.APIToken); err != nil {
		log.Error("refusing to start", "err", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	redis.SetLogger(log)
	d, err := newDaemon(ctx, &cfg, log)
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	return d.run(ctx)
}

// warnTokenFile warns when others than stickyd's user may read the token.
func warnTokenFile(cfg *config.Config, log *slog.Logger) {
	if cfg.TokenFileExposed() {
		log.Warn("api_token_file is readable or writable by group or others; chmod 600 it",
			"file", cfg.APITokenFile, "mode", fmt.Sprintf("%04o", cfg.APITokenFileMode))
	}
}

// daemon is everything serve wires together.
type daemon struct {
	cfg   *config.Config
	log   *slog.Logger
	st    store.Store
	mx    *metrics.Metrics
	ag    *agent.Agent
	spoe  *spoe.Server
	spoeL net.Listener
	admin *api.Server
	apiL  net.Listener
	// coherence clears HAProxy's table entries the store's changes make
	// stale; nil without a stats socket.
	coherence *agent.Coherence
	// connected keeps connected clients' bindings alive; nil without a
	// stats socket (connected.go).
	connected *agent.Connected
}

// newDaemon opens the store and listeners and builds every component;
// on an error it closes what it opened.
func newDaemon(ctx context.Context, cfg *config.Config, log *slog.Logger) (d *daemon, err error) {
	d = &daemon{cfg: cfg, log: log}
	opened := d // d is nil by the time an error return runs the defer
	defer func() {
		if err != nil {
			opened.closeOpened()
		}
	}()
	if d.st, err = openStore(ctx, cfg, log); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	d.mx = metrics.New(metrics.Options{Version: version, Logger: log})
	d.mx.RegisterStoreState(d.st.Stats)
	if d.st.Stats().Cache != nil {
		st := d.st
		d.mx.RegisterStoreCache(func() store.CacheStats { return *st.Stats().Cache })
	}
	raw := d.st
	d.st = metrics.InstrumentStore(d.st, d.mx) // the agent and the API both see it
	if d.coherence, err = newCoherence(cfg, raw, log); err != nil {
		return nil, fmt.Errorf("haproxy.stats_socket: %w", err)
	}
	if d.coherence != nil {
		d.st = d.coherence.Wrap(d.st)
	}
	if d.ag, err = newAgent(cfg, d.st, log, d.mx); err != nil {
		return nil, err
	}
	d.mx.RegisterAgent(d.ag)
	if d.connected, err = newConnected(cfg, raw, log); err != nil {
		return nil, fmt.Errorf("haproxy.stats_socket: %w", err)
	}
	if d.connected != nil {
		d.ag.SetConnected(d.connected)
	}
	if d.spoeL, err = listenSPOE(cfg.SPOEListen); err != nil {
		return nil, fmt.Errorf("listen for SPOE on %s: %w", cfg.SPOEListen, err)
	}
	d.spoe = spoe.NewServer(d.ag, log, spoe.Limits{MaxFrameSize: cfg.MaxFrameSize, MaxConnections: cfg.SPOEMaxConnections,
		FrameTimeout: cfg.SPOEFrameTimeout.D(), IdleTimeout: cfg.SPOEIdleTimeout.D()})
	d.mx.RegisterSPOE(d.spoe.Stats)
	if cfg.APIListen == "" {
		return d, nil
	}
	cc, _ := raw.(store.ConnectedCounter)
	d.admin, err = api.New(api.Options{Config: cfg, Store: d.st, Agent: d.ag, Logger: log, Connected: cc,
		Metrics: d.mx.Handler(), Middleware: []echo.MiddlewareFunc{d.mx.APIMiddleware()}})
	if err != nil {
		return nil, fmt.Errorf("API: %w", err)
	}
	if d.apiL, err = net.Listen("tcp", cfg.APIListen); err != nil {
		return nil, fmt.Errorf("listen for the API on %s: %w", cfg.APIListen, err)
	}
	return d, nil
}

func newAgent(cfg *config.Config, st store.Store, log *slog.Logger, mx *metrics.Metrics) (*agent.Agent, error) {
	opts := agent.Options{ObserveDecision: mx.ObserveDecision}
	if cfg.HAProxy.StatsSocket != "" {
		// HAProxy's own drain is invisible to srv_is_up: read it from the
		// Runtime API this agent's HAProxy exposes.
		rt, err := haproxy.NewRuntimeAPI(cfg.HAProxy.StatsSocket, time.Second)
		if err != nil {
			return nil, fmt.Errorf("haproxy.stats_socket: %w", err)
		}
		opts.HAProxyDrain = rt
	}
	ag, err := agent.New(cfg, st, log, opts)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	return ag, nil
}

// closeOpened releases what newDaemon opened before it failed.
func (d *daemon) closeOpened() {
	for _, l := range []net.Listener{d.spoeL, d.apiL} {
		if l != nil {
			_ = l.Close()
		}
	}
	if d.st != nil {
		_ = d.st.Close()
	}
}

// run serves until ctx ends or a server fails, then stops every goroutine
// it started before it closes the store they use.
func (d *daemon) run(ctx context.Context) int {
	var wg sync.WaitGroup
	bg, stopBackground := context.WithCancel(context.Background())
	errc := make(chan error, 2)
	goTracked := func(f func()) { wg.Add(1); go func() { defer wg.Done(); f() }() }
	goTracked(func() { d.ag.Run(bg) })
	if d.coherence != nil {
		goTracked(func() { d.coherence.Run(bg) })
	}
	if d.connected != nil {
		goTracked(func() { d.connected.Run(bg) })
	}
	goTracked(func() {
		d.mx.RunBindingsRefresher(bg, d.st, d.ag.Backends(), metrics.DefaultBindingsInterval, metrics.DefaultBindingsTimeout)
	})
	goTracked(func() { errc <- d.spoe.Serve(d.spoeL) })
	apiAddr := "disabled"
	if d.admin != nil {
		apiAddr = d.apiL.Addr().String()
		goTracked(func() { errc <- d.admin.Serve(d.apiL) })
	}
	d.log.Info("stickyd serving", "version", version, "spoe", d.spoeL.Addr().String(), "api", apiAddr,
		"api_auth", d.cfg.APIToken != "", "store", storeKind(d.cfg), "backends", len(d.cfg.Backends))
	code := 0
	select {
	case <-ctx.Done():
		d.log.Info("shutting down")
	case err := <-errc:
		if err != nil {
			d.log.Error("server failed", "err", err)
			code = 1
		}
	}
	d.shutdown()
	stopBackground()
	wg.Wait()
	if err := d.st.Close(); err != nil {
		d.log.Warn("store close", "err", err)
	}
	return code
}

// shutdown stops the servers: SPOE first, so that HAProxy's in-flight
// connections get their answers.
func (d *daemon) shutdown() {
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d.ag.StopEvacuations()
	d.ag.StopRebalances()
	if err := d.spoe.Shutdown(sctx); err != nil && !errors.Is(err, context.Canceled) {
		d.log.Warn("SPOE shutdown incomplete", "err", err)
	}
	if d.admin != nil {
		if err := d.admin.Shutdown(sctx); err != nil {
			d.log.Warn("API shutdown incomplete", "err", err)
		}
	}
}
