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
//   - the store fails or is slow: the rendezvous choice (fail open);
//   - a new client past the store's max_bindings: the rendezvous choice,
//     not stored (existing bindings are untouched).
package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/stickyd/stickyd/config"
	"github.com/stickyd/stickyd/internal/ratelog"
	"github.com/stickyd/stickyd/store"
)

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
	maxTTL    time.Duration // caps what a session expiry asks for
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
	storeLog, drainLog, evacLog, fullLog, readOnlyLog *ratelog.Logger

	evacMu      sync.Mutex
	evacuations map[string]*evacuation
	rebalMu     sync.Mutex
	rebalances  map[string]*rebalance // by backend (rebalance.go)

	connected *Connected // records answered ids; nil: none (connected.go)
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
		maxTTL:    cmp.Or(cfg.MaxTTL.D(), math.MaxInt64), // 0: no cap
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
	a.fullLog = ratelog.New(log, ratelog.DefaultEvery)
	a.readOnlyLog = ratelog.New(log, ratelog.DefaultEvery)
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
		d := a.decide(ctx, q)
		a.noteAnswer(q, d)
		return d
	}
	start := time.Now()
	d := a.decide(ctx, q)
	a.observe(d.Outcome, time.Since(start))
	a.noteAnswer(q, d)
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
		if d, ok = a.tryDecide(q); ok {
			a.noteAnswer(q, d)
		}
		return d, ok
	}
	start := time.Now()
	if d, ok = a.tryDecide(q); ok {
		a.observe(d.Outcome, time.Since(start))
		a.noteAnswer(q, d)
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
	switch {
	case b.keyUsername:
		key = q.Username
	case b.keyCertCN:
		key = q.CertCN
	}
	b.observe(q)
	if len(key) == 0 {
		return p, Decision{Outcome: OutcomeNoKey}, true
	}
	draining := b.noNewClients()
	choice := b.rendezvous(key, func(i int) bool { return q.isUp(i) && !draining.get(i) })
	if choice < 0 {
		// Every live server is draining: a client must still land somewhere.
		choice = b.rendezvous(key, q.isUp)
	}
	if choice < 0 {
		return p, Decision{Outcome: OutcomeNoServer}, true
	}
	// Where HAProxy already sent the client (its table, or its hash while
	// the agent was down): a new binding adopts it rather than moving it.
	if s := q.seen - 1; s >= 0 && s < len(b.Servers) && q.isUp(s) && !draining.get(s) {
		choice = s
	}
	return plan{b: b, key: key, proposed: b.Servers[choice].Name, ttl: a.bindingTTL(q.SessionExpiry)}, Decision{}, false
}

// bindingTTL is a binding's TTL: the larger of ttl and the session expiry,
// the latter capped by max_ttl.
func (a *Agent) bindingTTL(sessionExpiry time.Duration) time.Duration {
	ttl := a.ttl
	if ttl > 0 && sessionExpiry > ttl {
		ttl = max(ttl, min(sessionExpiry, a.maxTTL))
	}
	return ttl
}

// settle turns the binding in force into a decision; move is true when
// the binding is on a server that is down or gone and must be moved.
func (a *Agent) settle(p *plan, q *Query, claim store.Claim) (d Decision, move bool) {
	if claim.NotStored {
		a.notStored(p.b.Name)
		return Decision{Server: p.proposed, Outcome: OutcomeNotStored}, false
	}
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
func (a *Agent) afterMove(p *plan, q *Query, moved store.Claim) Decision {
	if moved.NotStored {
		a.notStored(p.b.Name)
		return Decision{Server: p.proposed, Outcome: OutcomeNotStored}
	}
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
	d, move := a.settle(&p, q, claim)
	if !move {
		return a.count(d)
	}
	// Bound to a down server, or to one no longer configured: move it.
	moved, err := a.store.Move(ctx, p.b.Name, id, claim.Server, p.proposed, p.ttl)
	if err != nil {
		a.storeFailed("move", p.b.Name, err)
		return a.count(Decision{Server: p.proposed, Outcome: OutcomeFallback})
	}
	return a.count(a.afterMove(&p, q, moved))
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
	d, move := a.settle(&p, q, claim)
	if !move {
		return a.count(d), true
	}
	moved, ok := a.inline.TryMove(p.b.Name, p.key, claim.Server, p.proposed, p.ttl)
	if !ok {
		return Decision{}, false
	}
	return a.count(a.afterMove(&p, q, moved)), true
}

func (a *Agent) count(d Decision) Decision {
	a.outcomes[d.Outcome].Add(1)
	return d
}

func (a *Agent) storeFailed(op, backend string, err error) {
	a.storeErrs.Add(1)
	if errors.Is(err, store.ErrReadOnly) {
		// The store answered: it only refused the write. Opening the
		// breaker would stop reading the bindings of bound clients too.
		a.storeOK()
		a.readOnlyLog.Warn("store refuses writes (read-only): a client was routed by rendezvous hash and not stored", "op", op, "backend", backend, "err", err)
		return
	}
	if a.breaker.failure() {
		a.log.Warn("store circuit breaker open: answering by rendezvous hash without the store", "after", op, "backend", backend, "err", err, "retry_in", a.breaker.cooldown)
		return
	}
	a.storeLog.Warn("store failed; answering by rendezvous hash (fail open)", "op", op, "backend", backend, "err", err)
}

// notStored warns, rate-limited, that a backend holds its cap of bindings.
func (a *Agent) notStored(backend string) {
	a.fullLog.Warn("backend holds max_bindings: new clients are routed by rendezvous hash but not stored", "backend", backend)
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
