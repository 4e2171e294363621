package main

import (
	"log/slog"
	"time"

	"github.com/stickyd/stickyd/agent"
	"github.com/stickyd/stickyd/config"
	"github.com/stickyd/stickyd/haproxy"
	"github.com/stickyd/stickyd/store"
)

// newConnected builds the refresh that keeps the bindings of clients
// connected through this agent's HAProxy alive, over the raw store (the
// wrappers do not carry store.Toucher). Without a stats socket it warns
// that TTLs count from the last CONNECT, and returns nil.
func newConnected(cfg *config.Config, raw store.Store, log *slog.Logger) (*agent.Connected, error) {
	if cfg.TTL.D() <= 0 {
		return nil, nil // bindings never expire: nothing to keep alive
	}
	if cfg.HAProxy.StatsSocket == "" {
		log.Warn("no haproxy.stats_socket: stickyd cannot see which clients are connected, so a binding's ttl counts from its client's last CONNECT; set ttl above your longest connection",
			"ttl", cfg.TTL.D())
		return nil, nil
	}
	rt, err := haproxy.NewRuntimeAPI(cfg.HAProxy.StatsSocket, time.Second)
	if err != nil {
		return nil, err
	}
	return agent.NewConnected(cfg, rt, raw, log), nil
}
