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

func haproxyConfig(path, out, version string, logConns bool, stdout, stderr io.Writer) int {
	cfg, err := config.Load(path)
	if err == nil {
		err = cfg.CheckTLSFiles()
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	v, from, err := targetVersion(&cfg, version)
	if err != nil {
		fmt.Fprintln(stderr, "stickyd haproxy-config:", err)
		return 1
	}
	if err := haproxy.WriteConfig(&cfg, out, haproxy.GenOptions{LogConnections: logConns, Version: v}); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	fmt.Fprintf(stdout, "wrote %s/%s and %s/%s for HAProxy %s (%s)\n", out, haproxy.ConfigFile, out, haproxy.SPOEFile, v, from)
	return 0
}

// targetVersion is the HAProxy line to generate for: --haproxy-version,
// else the haproxy on PATH (which must also have what cfg needs: TLS),
// else haproxy.DefaultVersion; from says which.
func targetVersion(cfg *config.Config, flag string) (v haproxy.Version, from string, err error) {
	if flag != "" {
		v, err = haproxy.ParseVersion(flag)
		from = "--haproxy-version"
	} else {
		var b haproxy.Build
		var ok bool
		b, ok, err = haproxy.DetectBuild(context.Background())
		v, from = b.Version, "haproxy -vv"
		switch {
		case err == nil && !ok:
			v, from = haproxy.DefaultVersion, "default; no haproxy on PATH"
		case err == nil:
			if err = b.CheckConfig(cfg); err != nil {
				err = fmt.Errorf("the haproxy on PATH (%s): %w", b.Version, err)
			}
		}
	}
	if err != nil {
		return v, from, err
	}
	v, err = v.Check()
	return v, from, err
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
