package agent

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/stickyd/stickyd/config"
	"github.com/stickyd/stickyd/store"
)

// TableClearer removes entries of HAProxy's table of the agent's answers
// (haproxy.RuntimeAPI over haproxy.stats_socket).
type TableClearer interface {
	ClearTableKey(ctx context.Context, backend string, clientKey []byte) error
	ClearTableServer(ctx context.Context, backend string, serverID int) error
	ClearTable(ctx context.Context, backend string) error
}

// clearTimeout bounds one Runtime API call made for coherence.
const clearTimeout = time.Second

// remoteQueue bounds the changes heard from other agents and not yet
// cleared; past it the whole table of the backend is cleared instead.
const remoteQueue = 4096

// Coherence keeps HAProxy's table of answers coherent with the store:
// every binding change made through this process (API pin, evict,
// evict-by-server, evacuation, a move on the connect path) clears the
// entry before the call returns, and every change another agent makes,
// heard over the store's pub/sub (Forget), clears it shortly after.
type Coherence struct {
	clearer TableClearer
	servers map[string]map[string]int // backend -> server -> HAProxy id
	log     *slog.Logger
	remote  chan change
	// overflow is set when Forget found the queue full: Run then clears
	// every table instead of the lost keys.
	overflow atomic.Bool
}

type change struct{ backend, clientID string }

// NewCoherence clears entries through c for the configured backends.
func NewCoherence(cfg *config.Config, c TableClearer, log *slog.Logger) *Coherence {
	co := &Coherence{clearer: c, servers: map[string]map[string]int{}, log: log, remote: make(chan change, remoteQueue)}
	for _, b := range cfg.Backends {
		ids := map[string]int{}
		for i, s := range b.Servers {
			ids[s.Name] = i + 1 // the generated configuration's "id N"
		}
		co.servers[b.Name] = ids
	}
	return co
}

// Wrap returns st with every binding change followed by its clear.
func (co *Coherence) Wrap(st store.Store) store.Store { return &coherentStore{Store: st, co: co} }

// Forget queues the clear of a binding another agent changed. It never
// blocks: it runs on the store's subscription.
func (co *Coherence) Forget(backend, clientID string) {
	select {
	case co.remote <- change{backend, clientID}:
	default:
		co.overflow.Store(true)
	}
}

// Run clears what Forget queued until ctx ends.
func (co *Coherence) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case ch := <-co.remote:
			co.clearKey(ctx, ch.backend, ch.clientID)
		}
		if co.overflow.Swap(false) {
			for len(co.remote) > 0 {
				<-co.remote
			}
			for backend := range co.servers {
				co.clearAll(ctx, backend)
			}
		}
	}
}

func (co *Coherence) clearKey(ctx context.Context, backend, clientID string) {
	if co.servers[backend] == nil {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, clearTimeout)
	defer cancel()
	if err := co.clearer.ClearTableKey(cctx, backend, []byte(clientID)); err != nil {
		co.log.Warn("cannot clear HAProxy's table entry; it stays until haproxy.local_fresh passes", "backend", backend, "err", err)
	}
}

func (co *Coherence) clearAll(ctx context.Context, backend string) {
	cctx, cancel := context.WithTimeout(ctx, clearTimeout)
	defer cancel()
	if err := co.clearer.ClearTable(cctx, backend); err != nil {
		co.log.Warn("cannot clear HAProxy's table", "backend", backend, "err", err)
	}
}

func (co *Coherence) clearServer(ctx context.Context, backend, server string) {
	id, ok := co.servers[backend][server]
	if !ok {
		return
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), clearTimeout)
	defer cancel()
	if err := co.clearer.ClearTableServer(cctx, backend, id); err != nil {
		co.log.Warn("cannot clear HAProxy's table entries of a server", "backend", backend, "server", server, "err", err)
	}
}

// coherentStore clears HAProxy's entry after each change: after, so a
// connect between the two finds the old entry (as it would have before the
// call) but none after the call returns.
type coherentStore struct {
	store.Store
	co *Coherence
}

func (s *coherentStore) Put(ctx context.Context, b store.Binding) error {
	err := s.Store.Put(ctx, b)
	if err == nil {
		s.co.clearKey(context.WithoutCancel(ctx), b.Backend, b.ClientID)
	}
	return err
}

func (s *coherentStore) Delete(ctx context.Context, backend, clientID string) error {
	err := s.Store.Delete(ctx, backend, clientID)
	if err == nil {
		s.co.clearKey(context.WithoutCancel(ctx), backend, clientID)
	}
	return err
}

func (s *coherentStore) DeleteByServer(ctx context.Context, backend, server string) (int, error) {
	n, err := s.Store.DeleteByServer(ctx, backend, server)
	// Even a partial failure deleted some: clear them all.
	if n > 0 || err == nil {
		s.co.clearServer(ctx, backend, server)
	}
	return n, err
}

func (s *coherentStore) Move(ctx context.Context, backend, clientID, from, to string, ttl time.Duration) (store.Claim, error) {
	c, err := s.Store.Move(ctx, backend, clientID, from, to, ttl)
	if err == nil && c.Claimed {
		s.co.clearKey(context.WithoutCancel(ctx), backend, clientID)
	}
	return c, err
}
