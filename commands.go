package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/stickyd/stickyd/config"
	"github.com/stickyd/stickyd/haproxy"
	"github.com/stickyd/stickyd/store"
	"github.com/stickyd/stickyd/store/memory"
	"github.com/stickyd/stickyd/store/redis"
)

func checkConfig(path string, stdout, stderr io.Writer) int {
	cfg, err := config.Load(path)
	if err == nil {
		err = cfg.CheckTLSFiles() // HAProxy's files: only HAProxy's side reads them
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if cfg.TokenFileExposed() {
		fmt.Fprintf(stderr, "warning: api_token_file %s has mode %04o: group or others may read it; chmod 600 it\n", cfg.APITokenFile, cfg.APITokenFileMode)
	}
	fmt.Fprintf(stdout, "%s: ok (%d backend(s), store: %s)\n", path, len(cfg.Backends), storeKind(&cfg))
	return 0
}

func haproxyConfig(path, out string, logConns bool, stdout, stderr io.Writer) int {
	cfg, err := config.Load(path)
	if err == nil {
		err = cfg.CheckTLSFiles()
	}
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

func openStore(ctx context.Context, cfg *config.Config, log *slog.Logger) (store.Store, error) {
	if cfg.RedisURL == "" {
		return memory.New(memory.Options{MaxBindings: cfg.MaxBindings}), nil
	}
	return redis.New(ctx, redis.Options{URL: cfg.RedisURL, OpTimeout: cfg.StoreTimeout.D(), CacheSize: cfg.RedisCacheSize,
		MaxBindings: cfg.MaxBindings, Logger: log})
}
