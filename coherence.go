package main

import (
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/stickyd/stickyd/agent"
	"github.com/stickyd/stickyd/config"
	"github.com/stickyd/stickyd/haproxy"
	"github.com/stickyd/stickyd/store"
)

// changeNotifier is a store that tells of changes other agents make
// (the Redis store, with its cache on).
type changeNotifier interface {
	SetOnChange(fn func(backend, clientID string)) bool
}

// newCoherence keeps (once run) this agent's HAProxy's table of answers coherent
// with the store, through the Runtime API. Without a stats socket it
// returns nil and says at startup how stale an entry can be.
func newCoherence(cfg *config.Config, raw store.Store, log *slog.Logger) (*agent.Coherence, error) {
	fresh := cfg.LocalFreshWindow()
	if cfg.HAProxy.StatsSocket == "" {
		if fresh > 0 {
			log.Warn("no haproxy.stats_socket: binding changes (API, evacuation, other instances) reach clients HAProxy routes from its table only once haproxy.local_fresh has passed",
				"local_fresh", fresh)
		}
		return nil, nil
	}
	rt, err := haproxy.NewRuntimeAPI(cfg.HAProxy.StatsSocket, time.Second)
	if err != nil {
		return nil, err
	}
	co := agent.NewCoherence(cfg, rt, log)
	if n, ok := raw.(changeNotifier); ok && !n.SetOnChange(co.Forget) && fresh > 0 {
		log.Warn("redis_cache_size is 0: changes other instances make reach clients HAProxy routes from its table only once haproxy.local_fresh has passed",
			"local_fresh", fresh)
	}
	return co, nil
}

// listenSPOE listens on host:port, or on a unix socket for unix@/path
// (a stale socket file left by a killed agent is replaced; the socket is
// made 0660, for an HAProxy of the same user or group).
func listenSPOE(addr string) (net.Listener, error) {
	path := config.UnixPath(addr)
	if path == "" {
		return net.Listen("tcp", addr)
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		_ = os.Remove(path)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	// HAProxy must be able to connect: its user, or a group it shares.
	if err := os.Chmod(path, 0o660); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}
