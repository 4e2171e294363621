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
	"github.com/stickyd/stickyd/store/memory"
	"github.com/stickyd/stickyd/store/redis"
)

func checkConfig(path string, stdout, stderr io.Writer) int {
	cfg, err := config.Load(path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: ok (%d backend(s), store: %s)\n", path, len(cfg.Backends), storeKind(&cfg))
	return 0
}

func haproxyConfig(path, out string, logConns bool, stdout, stderr io.Writer) int {
	cfg, err := config.Load(path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if err := haproxy.WriteConfig(&cfg, out, haproxy.GenOptions{LogConnections: logConns}); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	fmt.Fprintf(stdout, "wrote %s/%s and %s/%s\n", out, haproxy.ConfigFile, out, haproxy.SPOEFile)
	return 0
}

func storeKind(cfg *config.Config) string {
	if cfg.RedisURL == "" {
		return "memory"
	}
	return "redis " + redis.Redact(cfg.RedisURL)
}

func newLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.Log.Level))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func openStore(ctx context.Context, cfg *config.Config) (store.Store, error) {
	if cfg.RedisURL == "" {
		return memory.New(memory.Options{}), nil
	}
	return redis.New(ctx, redis.Options{URL: cfg.RedisURL, OpTimeout: cfg.StoreTimeout.D(), CacheSize: cfg.RedisCacheSize})
}

// serve runs until SIGINT or SIGTERM, then shuts down gracefully.
func serve(path string, stderr io.Writer) int {
	cfg, err := config.Load(path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	log := newLogger(&cfg, stderr)
	if err := api.CheckListen(cfg.APIListen, cfg.APIToken); err != nil {
		log.Error("refusing to start", "err", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	redis.SetLogger(log)
	st, err := openStore(ctx, &cfg)
	if err != nil {
		log.Error("cannot open store", "err", err)
		return 1
	}
	defer st.Close()
	mx := metrics.New(metrics.Options{Version: version, Logger: log})
	if st.Stats().Cache != nil {
		mx.RegisterStoreCache(func() store.CacheStats { return *st.Stats().Cache })
	}
	raw := st
	st = metrics.InstrumentStore(st, mx) // the agent and the API both see it
	opts := agent.Options{ObserveDecision: mx.ObserveDecision}
	coherence, err := startCoherence(ctx, &cfg, raw, log)
	if err != nil {
		log.Error("bad haproxy.stats_socket", "err", err)
		return 1
	}
	if coherence != nil {
		st = coherence.Wrap(st)
	}
	if cfg.HAProxy.StatsSocket != "" {
		// HAProxy's own drain is invisible to srv_is_up: read it from the
		// Runtime API this agent's HAProxy exposes.
		rt, err := haproxy.NewRuntimeAPI(cfg.HAProxy.StatsSocket, time.Second)
		if err != nil {
			log.Error("bad haproxy.stats_socket", "err", err)
			return 1
		}
		opts.HAProxyDrain = rt
	}
	ag, err := agent.New(&cfg, st, log, opts)
	if err != nil {
		log.Error("cannot build agent", "err", err)
		return 1
	}
	agentCtx, stopAgent := context.WithCancel(context.Background())
	defer stopAgent()
	go ag.Run(agentCtx)
	mx.RegisterAgent(ag)
	go mx.RunBindingsRefresher(agentCtx, st, ag.Backends(), metrics.DefaultBindingsInterval, metrics.DefaultBindingsTimeout)

	spoeL, err := listenSPOE(cfg.SPOEListen)
	if err != nil {
		log.Error("cannot listen for SPOE", "addr", cfg.SPOEListen, "err", err)
		return 1
	}
	srv := spoe.NewServer(ag, log, cfg.MaxFrameSize)
	mx.RegisterSPOE(srv.Stats)
	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(spoeL) }()

	var admin *api.Server
	apiAddr := "disabled"
	if cfg.APIListen != "" {
		admin, err = api.New(api.Options{Config: &cfg, Store: st, Agent: ag, Logger: log,
			Metrics: mx.Handler(), Middleware: []echo.MiddlewareFunc{mx.APIMiddleware()}})
		if err != nil {
			log.Error("cannot build API", "err", err)
			return 1
		}
		apiL, err := net.Listen("tcp", cfg.APIListen)
		if err != nil {
			log.Error("cannot listen for the API", "addr", cfg.APIListen, "err", err)
			return 1
		}
		apiAddr = apiL.Addr().String()
		go func() { errc <- admin.Serve(apiL) }()
	}

	log.Info("stickyd serving", "version", version, "spoe", spoeL.Addr().String(), "api", apiAddr,
		"api_auth", cfg.APIToken != "", "store", storeKind(&cfg), "backends", len(cfg.Backends))
	code := 0
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case err := <-errc:
		if err != nil {
			log.Error("server failed", "err", err)
			code = 1
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ag.StopEvacuations()
	// SPOE first: HAProxy's in-flight connections get their answers.
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.Canceled) {
		log.Warn("SPOE shutdown incomplete", "err", err)
	}
	if admin != nil {
		if err := admin.Shutdown(sctx); err != nil {
			log.Warn("API shutdown incomplete", "err", err)
		}
	}
	return code
}
