// Package agent decides which server an MQTT client goes to.
//
// It knows nothing of SPOE or HTTP: callers hand it a Query (backend, client
// key, what HAProxy reports of each server) and get a Decision. Rules:
//
//   - a binding to a server that is up wins, and its TTL is refreshed;
//   - no binding: the client is placed on an eligible server (up, not
//     draining) by weighted rendezvous hashing, claimed atomically; if another
//     agent claimed first, its answer wins;
//   - a binding to a server that is down is moved (compare-and-swap) to the
//     rendezvous choice, unless it is pinned: a pinned client is routed to the
//     rendezvous choice for this connection but keeps its binding;
//   - no key (empty client id): no answer, HAProxy balances as usual;
//   - the store fails or is slow: the rendezvous choice (fail open).
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/stickyd/stickyd/config"
	"github.com/stickyd/stickyd/internal/ratelog"
	"github.com/stickyd/stickyd/store"
)

// MaxServers is the most servers one backend may have (the Query keeps
// server states in fixed bitsets so the hot path does not allocate).
const MaxServers = 256

// Outcome says how a Decision was reached.
type Outcome int

// Outcomes, also used as metric labels.
const (
	OutcomeNoKey          Outcome = iota // no client key: no answer
	OutcomeUnknownBackend                // backend not configured: no answer
	OutcomeNoServer                      // every server down: no answer
	OutcomeExisting                      // existing binding to a live server
	OutcomePlaced                        // new client, binding claimed
	OutcomeMoved                         // binding moved off a down server
	OutcomePinnedDown                    // pinned to a down server: routed elsewhere, binding kept
	OutcomeFallback                      // store failed: rendezvous answer
	numOutcomes
)

var outcomeNames = [...]string{"no_key", "unknown_backend", "no_server", "existing", "placed", "moved", "pinned_down", "fallback"}

func (o Outcome) String() string {
	if o < 0 || int(o) >= len(outcomeNames) {
		return fmt.Sprintf("outcome(%d)", int(o))
	}
	return outcomeNames[o]
}

// Outcomes lists every outcome, for metrics.
func Outcomes() []Outcome {
	out := make([]Outcome, numOutcomes)
	for i := range out {
		out[i] = Outcome(i)
	}
	return out
}

// Decision is the agent's answer. Server is empty when there is none.
type Decision struct {
	Server  string
	Outcome Outcome
}

// Query is one connection to decide. Byte slices may alias a network
// buffer: Decide copies what it keeps.
type Query struct {
	Backend  string
	ClientID []byte
	Username []byte
	// SessionExpiry is the MQTT 5 session expiry interval, 0 when absent.
	SessionExpiry time.Duration

	up, known bitset
}

// SetUp records HAProxy's view of the server at index i (see
// Backend.ServerIndex). Servers never set count as up.
func (q *Query) SetUp(i int, up bool) {
	if i < 0 || i >= MaxServers {
		return
	}
	q.known.set(i, true)
	q.up.set(i, up)
}

// Reset clears the query for reuse.
func (q *Query) Reset() { *q = Query{} }

func (q *Query) isUp(i int) bool { return !q.known.get(i) || q.up.get(i) }

type bitset [MaxServers / 64]uint64

func (b *bitset) set(i int, v bool) {
	if v {
		b[i/64] |= 1 << (uint(i) % 64)
	} else {
		b[i/64] &^= 1 << (uint(i) % 64)
	}
}
func (b *bitset) get(i int) bool { return b[i/64]&(1<<(uint(i)%64)) != 0 }

// Options tune an Agent beyond the configuration file.
type Options struct {
	// DrainPoll is how often Run re-reads drain state from the store (and
	// from HAProxy, with HAProxyDrain).
	DrainPoll time.Duration
	// BreakerFailures consecutive store failures open the circuit breaker
	// (default 5); while open, decisions skip the store entirely.
	BreakerFailures int
	// BreakerCooldown is how long the breaker stays open before one
	// decision probes the store again (default 1s).
	BreakerCooldown time.Duration
	// ObserveDecision, when set, is called after every decision with its
	// outcome and duration (for metrics).
	ObserveDecision func(Outcome, time.Duration)
	// HAProxyDrain, when set, is polled with the drain state: servers it
	// reports unavailable (HAProxy's own drain or maintenance, which
	// srv_is_up does not show) get no new clients.
	HAProxyDrain HAProxyDrainSource
}

// HAProxyDrainSource reports servers that must get no new clients.
type HAProxyDrainSource interface {
	Drained(ctx context.Context, backend string) (map[string]bool, error)
}

// Agent makes decisions. It is safe for concurrent use.
type Agent struct {
	store     store.Store
	log       *slog.Logger
	ttl       time.Duration
	timeout   time.Duration
	drainPoll time.Duration
	backends  map[string]*Backend
	order     []*Backend

	inline       store.Inline // the store's in-memory path, nil if none
	observe      func(Outcome, time.Duration)
	haproxyDrain HAProxyDrainSource
	breaker      breaker

	outcomes     [numOutcomes]atomic.Uint64
	storeErrs    atomic.Uint64
	breakerSkips atomic.Uint64
	// One limiter per kind of failure, so one cannot hide the other.
	storeLog, drainLog, evacLog *ratelog.Logger

	evacMu      sync.Mutex
	evacuations map[string]*evacuation
}

// New builds an agent over a store for the configured backends.
func New(cfg *config.Config, st store.Store, log *slog.Logger, opts Options) (*Agent, error) {
	if opts.DrainPoll <= 0 {
		opts.DrainPoll = time.Second
	}
	if opts.BreakerFailures <= 0 {
		opts.BreakerFailures = 5
	}
	if opts.BreakerCooldown <= 0 {
		opts.BreakerCooldown = time.Second
	}
	a := &Agent{
		store:     st,
		log:       log,
		ttl:       cfg.TTL.D(),
		timeout:   cfg.StoreTimeout.D(),
		drainPoll: opts.DrainPoll,
		backends:  map[string]*Backend{},

		observe:      opts.ObserveDecision,
		haproxyDrain: opts.HAProxyDrain,
		breaker:      breaker{threshold: int32(opts.BreakerFailures), cooldown: opts.BreakerCooldown},
		evacuations:  map[string]*evacuation{},
	}
	a.inline = st.Inline()
	for _, bc := range cfg.Backends {
		if len(bc.Servers) > MaxServers {
			return nil, fmt.Errorf("backend %q: %d servers, at most %d", bc.Name, len(bc.Servers), MaxServers)
		}
		b := newBackend(bc)
		a.backends[b.Name] = b
		a.order = append(a.order, b)
	}
	a.storeLog = ratelog.New(log, ratelog.DefaultEvery)
	a.drainLog = ratelog.New(log, ratelog.DefaultEvery)
	a.evacLog = ratelog.New(log, ratelog.DefaultEvery)
	return a, nil
}

// Backend returns the named backend, or nil.
func (a *Agent) Backend(name string) *Backend { return a.backends[name] }

// Backends returns every backend in configuration order.
func (a *Agent) Backends() []*Backend { return a.order }

// Decide answers one connection. It never waits longer than the store
// budget (store_timeout) and answers without the store when it fails.
func (a *Agent) Decide(ctx context.Context, q *Query) Decision {
	if a.observe == nil {
		return a.decide(ctx, q)
	}
	start := time.Now()
	d := a.decide(ctx, q)
	a.observe(d.Outcome, time.Since(start))
	return d
}

// TryDecide answers one connection if it can without waiting on I/O, so a
// caller may answer it inline. ok is false when the decision needs a store
// round trip: nothing was counted, and Decide must be called.
func (a *Agent) TryDecide(q *Query) (d Decision, ok bool) {
	if a.inline == nil {
		return Decision{}, false
	}
	if a.observe == nil {
		return a.tryDecide(q)
	}
	start := time.Now()
	if d, ok = a.tryDecide(q); ok {
		a.observe(d.Outcome, time.Since(start))
	}
	return d, ok
}

// plan is what a decision knows before it asks the store.
type plan struct {
	b        *Backend
	key      []byte
	proposed string
	ttl      time.Duration
}

// prepare does the part of a decision that needs no store. done is true
// when that settles it (no key, unknown backend, no server up).
func (a *Agent) prepare(q *Query) (p plan, d Decision, done bool) {
	b := a.backends[q.Backend]
	if b == nil {
		return p, Decision{Outcome: OutcomeUnknownBackend}, true
	}
	key := q.ClientID
	if b.keyUsername {
		key = q.Username
	}
	b.observe(q)
	if len(key) == 0 {
		return p, Decision{Outcome: OutcomeNoKey}, true
	}
	draining := b.noNewClients()
	h := hashKey(key)
	choice := b.rendezvous(h, func(i int) bool { return q.isUp(i) && !draining.get(i) })
	if choice < 0 {
		// Every live server is draining: a client must still land somewhere.
		choice = b.rendezvous(h, q.isUp)
	}
	if choice < 0 {
		return p, Decision{Outcome: OutcomeNoServer}, true
	}
	ttl := a.ttl
	if ttl > 0 && q.SessionExpiry > ttl {
		ttl = q.SessionExpiry
	}
	return plan{b: b, key: key, proposed: b.Servers[choice].Name, ttl: ttl}, Decision{}, false
}

// settle turns the binding in force into a decision; move is true when
// the binding is on a server that is down or gone and must be moved.
func (p *plan) settle(q *Query, claim store.Claim) (d Decision, move bool) {
	idx := p.b.ServerIndex(claim.Server)
	switch {
	case idx >= 0 && q.isUp(idx) && claim.Claimed:
		return Decision{Server: claim.Server, Outcome: OutcomePlaced}, false
	case idx >= 0 && q.isUp(idx):
		return Decision{Server: claim.Server, Outcome: OutcomeExisting}, false
	case claim.Pinned && idx >= 0:
		return Decision{Server: p.proposed, Outcome: OutcomePinnedDown}, false
	}
	return Decision{}, true
}

// afterMove decides from the binding in force after a move.
func (p *plan) afterMove(q *Query, moved store.Claim) Decision {
	if i := p.b.ServerIndex(moved.Server); i >= 0 && q.isUp(i) {
		return Decision{Server: moved.Server, Outcome: OutcomeMoved}
	}
	// Another agent moved it somewhere this HAProxy sees as down, or it is
	// pinned: route this connection by the hash, keep the binding.
	return Decision{Server: p.proposed, Outcome: OutcomePinnedDown}
}

func (a *Agent) decide(ctx context.Context, q *Query) Decision {
	p, d, done := a.prepare(q)
	if done {
		return a.count(d)
	}
	if !a.breaker.allow() {
		// Redis is known to be down: answer at once instead of paying the
		// store timeout on every connect of a storm.
		a.breakerSkips.Add(1)
		return a.count(Decision{Server: p.proposed, Outcome: OutcomeFallback})
	}
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	id := string(p.key)
	claim, err := a.store.GetOrClaim(ctx, p.b.Name, id, p.proposed, p.ttl)
	if err != nil {
		a.storeFailed("get-or-claim", p.b.Name, err)
		return a.count(Decision{Server: p.proposed, Outcome: OutcomeFallback})
	}
	a.storeOK()
	d, move := p.settle(q, claim)
	if !move {
		return a.count(d)
	}
	// Bound to a down server, or to one no longer configured: move it.
	moved, err := a.store.Move(ctx, p.b.Name, id, claim.Server, p.proposed, p.ttl)
	if err != nil {
		a.storeFailed("move", p.b.Name, err)
		return a.count(Decision{Server: p.proposed, Outcome: OutcomeFallback})
	}
	return a.count(p.afterMove(q, moved))
}

// tryDecide is decide on store.Inline calls only; it counts nothing unless
// it answers.
func (a *Agent) tryDecide(q *Query) (Decision, bool) {
	p, d, done := a.prepare(q)
	if done {
		return a.count(d), true
	}
	switch a.breaker.state() {
	case breakerOpen:
		a.breakerSkips.Add(1)
		return a.count(Decision{Server: p.proposed, Outcome: OutcomeFallback}), true
	case breakerHalfOpen:
		return Decision{}, false // Decide sends the probe
	}
	claim, ok := a.inline.TryGetOrClaim(p.b.Name, p.key, p.proposed, p.ttl)
	if !ok {
		return Decision{}, false
	}
	d, move := p.settle(q, claim)
	if !move {
		return a.count(d), true
	}
	moved, ok := a.inline.TryMove(p.b.Name, p.key, claim.Server, p.proposed, p.ttl)
	if !ok {
		return Decision{}, false
	}
	return a.count(p.afterMove(q, moved)), true
}

func (a *Agent) count(d Decision) Decision {
	a.outcomes[d.Outcome].Add(1)
	return d
}

func (a *Agent) storeFailed(op, backend string, err error) {
	a.storeErrs.Add(1)
	if a.breaker.failure() {
		a.log.Warn("store circuit breaker open: answering by rendezvous hash without the store", "after", op, "backend", backend, "err", err, "retry_in", a.breaker.cooldown)
		return
	}
	a.storeLog.Warn("store failed; answering by rendezvous hash (fail open)", "op", op, "backend", backend, "err", err)
}

func (a *Agent) storeOK() {
	if a.breaker.success() {
		a.log.Info("store answers again: circuit breaker closed")
	}
}

// BreakerState is "closed", "open" or "half_open".
func (a *Agent) BreakerState() string { return a.breaker.state().String() }

// Stats is a snapshot of the agent's counters.
type Stats struct {
	Outcomes     map[string]uint64
	StoreErrors  uint64
	BreakerSkips uint64 // decisions answered without the store while the breaker was open
	Breaker      string // closed, open or half_open
}

// Stats returns the counters since start.
func (a *Agent) Stats() Stats {
	s := Stats{Outcomes: map[string]uint64{}, StoreErrors: a.storeErrs.Load(),
		BreakerSkips: a.breakerSkips.Load(), Breaker: a.breaker.state().String()}
	for i := range a.outcomes {
		s.Outcomes[Outcome(i).String()] = a.outcomes[i].Load()
	}
	return s
}

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
	index       map[string]int
	seeds       []uint64
	weights     []float64

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
		index:       map[string]int{},
		up:          make([]atomic.Bool, len(bc.Servers)),
		known:       make([]atomic.Bool, len(bc.Servers)),
	}
	for i, s := range bc.Servers {
		b.index[s.Name] = i
		b.seeds = append(b.seeds, hashKey([]byte(s.Name)))
		b.weights = append(b.weights, float64(s.Weight))
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
	i := b.rendezvous(hashKey(key), func(i int) bool { return up(i) && !d.get(i) })
	if i < 0 {
		i = b.rendezvous(hashKey(key), up)
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
