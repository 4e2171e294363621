package agent

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/stickyd/stickyd/config"
)

// RefreshDraining re-reads drain state from the store (and from HAProxy,
// with Options.HAProxyDrain) for every backend. On an error the last known
// state of that source stays: a missed poll must not undo a drain.
func (a *Agent) RefreshDraining(ctx context.Context) error {
	var errs []error
	for _, b := range a.order {
		if err := b.refresh(ctx, &b.draining, a.store.Draining); err != nil {
			errs = append(errs, fmt.Errorf("drain state of backend %q: %w", b.Name, err))
		}
		if a.haproxyDrain == nil {
			continue
		}
		if err := b.refresh(ctx, &b.haproxyDrained, a.haproxyDrain.Drained); err != nil {
			errs = append(errs, fmt.Errorf("HAProxy admin state of backend %q: %w", b.Name, err))
		}
	}
	return errors.Join(errs...)
}

// refresh replaces dst with the servers source names.
func (b *Backend) refresh(ctx context.Context, dst *atomic.Pointer[bitset], source func(context.Context, string) (map[string]bool, error)) error {
	set, err := source(ctx, b.Name)
	if err != nil {
		return err
	}
	var bs bitset
	for name, on := range set {
		if i := b.ServerIndex(name); i >= 0 && on {
			bs.set(i, true)
		}
	}
	dst.Store(&bs)
	return nil
}

// Run keeps drain state fresh until ctx ends, so a drain set through any
// agent's API reaches every agent sharing the store.
func (a *Agent) Run(ctx context.Context) {
	t := time.NewTicker(a.drainPoll)
	defer t.Stop()
	for {
		if err := a.RefreshDraining(ctx); err != nil && ctx.Err() == nil {
			a.drainLog.Warn("cannot read drain state; keeping the last known", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Backend is one configured backend and what the agent knows of it.
type Backend struct {
	Name        string
	Servers     []config.Server
	keyUsername bool
	keyCertCN   bool
	index       map[string]int
	seeds       [][]uint32 // DrawSeeds per server

	draining atomic.Pointer[bitset] // drained through the store (any agent's API)
	// haproxyDrained: drained or in maintenance in this agent's HAProxy.
	haproxyDrained atomic.Pointer[bitset]
	// Last server states HAProxy reported, for the API.
	up, known []atomic.Bool
}

func newBackend(bc config.Backend) *Backend {
	b := &Backend{
		Name:        bc.Name,
		Servers:     append([]config.Server(nil), bc.Servers...),
		keyUsername: bc.Key == config.KeyUsername,
		keyCertCN:   bc.Key == config.KeyCertCN,
		index:       map[string]int{},
		up:          make([]atomic.Bool, len(bc.Servers)),
		known:       make([]atomic.Bool, len(bc.Servers)),
	}
	for i, s := range bc.Servers {
		b.index[s.Name] = i
		b.seeds = append(b.seeds, DrawSeeds(s.Name, s.Weight))
	}
	b.draining.Store(&bitset{})
	b.haproxyDrained.Store(&bitset{})
	return b
}

// noNewClients is the union of both drain sources.
func (b *Backend) noNewClients() *bitset {
	d, h := b.draining.Load(), b.haproxyDrained.Load()
	if *h == (bitset{}) {
		return d
	}
	var u bitset
	for i := range u {
		u[i] = d[i] | h[i]
	}
	return &u
}

// ServerIndex returns the position of a server, or -1.
func (b *Backend) ServerIndex(name string) int {
	if i, ok := b.index[name]; ok {
		return i
	}
	return -1
}

// ServerState is what the agent knows of one server.
type ServerState struct {
	Name     string
	Address  string
	Weight   int
	Up       bool // as last reported by HAProxy; true when never reported
	Reported bool // HAProxy has reported this server at least once
	Draining bool // drained through the store (the API)
	// HAProxyDrain: HAProxy's Runtime API shows it in drain or maintenance.
	HAProxyDrain bool
}

// States returns every server's state in configuration order.
func (b *Backend) States() []ServerState {
	d, h := b.draining.Load(), b.haproxyDrained.Load()
	out := make([]ServerState, len(b.Servers))
	for i, s := range b.Servers {
		known := b.known[i].Load()
		out[i] = ServerState{
			Name: s.Name, Address: s.Address, Weight: s.Weight,
			Up: !known || b.up[i].Load(), Reported: known, Draining: d.get(i), HAProxyDrain: h.get(i),
		}
	}
	return out
}

// Place returns where rendezvous hashing puts a key among the servers that
// are up and not draining by the agent's last knowledge ("" if none).
func (b *Backend) Place(key []byte) string {
	return b.placeExcept(key, -1)
}

// placeExcept is Place with one server excluded (an evacuated one).
func (b *Backend) placeExcept(key []byte, except int) string {
	d := b.noNewClients()
	up := func(i int) bool { return i != except && (!b.known[i].Load() || b.up[i].Load()) }
	i := b.rendezvous(key, func(i int) bool { return up(i) && !d.get(i) })
	if i < 0 {
		i = b.rendezvous(key, up)
	}
	if i < 0 {
		return ""
	}
	return b.Servers[i].Name
}

func (b *Backend) observe(q *Query) {
	for i := range b.Servers {
		if q.known.get(i) {
			if b.up[i].Load() != q.up.get(i) || !b.known[i].Load() {
				b.up[i].Store(q.up.get(i))
				b.known[i].Store(true)
			}
		}
	}
}
