package agent

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/stickyd/stickyd/store"
)

// Sentinel errors of the rebalance API.
var (
	ErrRebalanceRunning = errors.New("a rebalance of this backend is already running")
	ErrBadTolerance     = errors.New("tolerance must be between 0 and 1")
	ErrNoTargets        = errors.New("no server is up and not draining")
)

// RebalanceStatus is the progress of evening out a backend's bindings.
type RebalanceStatus struct {
	Backend   string
	Rate      int
	Tolerance float64
	State     string // the Evacuation* states
	// Before are the binding counts at the start, Want each eligible
	// server's weight share of them.
	Before  map[string]int
	Want    map[string]float64
	Planned int // moves needed to bring every server within tolerance
	Moved   int
	Skipped int // pinned, or changed meanwhile
	Failed  int
	Error   string
	Started time.Time
	// Finished is zero while running.
	Finished time.Time
}

type rebalance struct {
	mu     sync.Mutex
	st     RebalanceStatus
	cancel context.CancelFunc
	done   chan struct{}
}

func (r *rebalance) status() RebalanceStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.st
	return st
}

func (r *rebalance) update(fn func(*RebalanceStatus)) {
	r.mu.Lock()
	fn(&r.st)
	r.mu.Unlock()
}

// PlanRebalance says how many bindings to move from which server to which
// so that every server holds its weight share within tolerance (relative:
// 0.05 is ±5%), moving as few as possible: it moves one binding at a time
// from the server furthest above its share to the one furthest below,
// until all are within bounds. counts and weights are of the eligible
// servers only.
func PlanRebalance(counts map[string]int, weights map[string]int, tolerance float64) (moves map[[2]string]int, want map[string]float64, total int) {
	n, wsum := 0, 0
	for s, w := range weights {
		n += counts[s]
		wsum += w
	}
	want = map[string]float64{}
	if wsum == 0 {
		return nil, want, 0
	}
	lo, hi := map[string]int{}, map[string]int{}
	c := map[string]int{}
	for s, w := range weights {
		want[s] = float64(n) * float64(w) / float64(wsum)
		lo[s] = int(math.Floor(want[s] * (1 - tolerance)))
		hi[s] = int(math.Ceil(want[s] * (1 + tolerance)))
		c[s] = counts[s]
	}
	moves = map[[2]string]int{}
	for range n + 1 { // each move lowers the imbalance: n bounds them
		src, dst := "", ""
		for s := range weights {
			if src == "" || diff(c, want, s) > diff(c, want, src) || (diff(c, want, s) == diff(c, want, src) && s < src) {
				src = s
			}
			if dst == "" || diff(c, want, s) < diff(c, want, dst) || (diff(c, want, s) == diff(c, want, dst) && s < dst) {
				dst = s
			}
		}
		if c[src] <= hi[src] && c[dst] >= lo[dst] {
			break
		}
		if diff(c, want, src)-diff(c, want, dst) < 2 {
			break // a move would only swap the imbalance (tiny numbers)
		}
		c[src]--
		c[dst]++
		moves[[2]string{src, dst}]++
		total++
	}
	return moves, want, total
}

func diff(c map[string]int, want map[string]float64, s string) float64 {
	return float64(c[s]) - want[s]
}

// Rebalance starts moving bindings from servers above their weight share
// to those below, at rate per second, only as many as needed to bring
// every server within tolerance. Servers down or draining take no part.
// Which clients are connected is not known to stickyd, so bindings move
// in the store's walk order; pinned ones stay. Progress is kept in this
// process only.
func (a *Agent) Rebalance(ctx context.Context, backend string, rate int, tolerance float64) (RebalanceStatus, error) {
	b := a.backends[backend]
	if b == nil {
		return RebalanceStatus{}, fmt.Errorf("%w %q", ErrUnknownBackend, backend)
	}
	if rate < 1 || rate > 100000 {
		return RebalanceStatus{}, ErrBadRate
	}
	if math.IsNaN(tolerance) || tolerance < 0 || tolerance >= 1 {
		return RebalanceStatus{}, ErrBadTolerance
	}
	a.rebalMu.Lock()
	defer a.rebalMu.Unlock()
	if a.rebalances == nil {
		a.rebalances = map[string]*rebalance{}
	}
	if r := a.rebalances[backend]; r != nil && r.status().State == EvacuationRunning {
		return r.status(), ErrRebalanceRunning
	}
	counts, err := a.store.CountByServer(ctx, backend)
	if err != nil {
		return RebalanceStatus{}, fmt.Errorf("rebalance: count bindings: %w", err)
	}
	weights := map[string]int{}
	for _, st := range b.States() {
		if st.Up && !st.Draining && !st.HAProxyDrain {
			weights[st.Name] = st.Weight
		}
	}
	if len(weights) == 0 {
		return RebalanceStatus{}, ErrNoTargets
	}
	moves, want, total := PlanRebalance(counts, weights, tolerance)
	runCtx, cancel := context.WithCancel(context.Background())
	r := &rebalance{
		st: RebalanceStatus{Backend: backend, Rate: rate, Tolerance: tolerance, State: EvacuationRunning,
			Before: counts, Want: want, Planned: total, Started: time.Now()},
		cancel: cancel, done: make(chan struct{}),
	}
	a.rebalances[backend] = r
	go a.runRebalance(runCtx, r, b, moves)
	return r.status(), nil
}

// RebalanceStatus returns the last rebalance of a backend, if any.
func (a *Agent) RebalanceStatus(backend string) (RebalanceStatus, bool) {
	a.rebalMu.Lock()
	r := a.rebalances[backend]
	a.rebalMu.Unlock()
	if r == nil {
		return RebalanceStatus{}, false
	}
	return r.status(), true
}

// CancelRebalance stops a running rebalance and waits for it to stop.
func (a *Agent) CancelRebalance(backend string) (RebalanceStatus, bool) {
	a.rebalMu.Lock()
	r := a.rebalances[backend]
	a.rebalMu.Unlock()
	if r == nil {
		return RebalanceStatus{}, false
	}
	r.cancel()
	<-r.done
	return r.status(), true
}

// StopRebalances cancels every running rebalance (at shutdown).
func (a *Agent) StopRebalances() {
	a.rebalMu.Lock()
	all := make([]*rebalance, 0, len(a.rebalances))
	for _, r := range a.rebalances {
		all = append(all, r)
	}
	a.rebalMu.Unlock()
	for _, r := range all {
		r.cancel()
		<-r.done
	}
}

func (a *Agent) runRebalance(ctx context.Context, r *rebalance, b *Backend, moves map[[2]string]int) {
	defer close(r.done)
	tick := time.NewTicker(time.Second / time.Duration(r.st.Rate))
	defer tick.Stop()
	finish := func(state string, err error) {
		r.update(func(s *RebalanceStatus) {
			s.State, s.Finished = state, time.Now()
			if err != nil {
				s.Error = err.Error()
			}
		})
		st := r.status()
		a.log.Info("rebalance ended", "backend", b.Name, "state", state, "planned", st.Planned, "moved", st.Moved, "err", err)
	}
	// quota[src] lists the destinations still owed by src.
	quota := map[string]map[string]int{}
	for k, n := range moves {
		if quota[k[0]] == nil {
			quota[k[0]] = map[string]int{}
		}
		quota[k[0]][k[1]] = n
	}
	for src, dsts := range quota {
		if err := a.rebalanceFrom(ctx, r, tick, b, src, dsts); err != nil {
			if ctx.Err() != nil {
				finish(EvacuationCancelled, nil)
			} else {
				finish(EvacuationFailed, err)
			}
			return
		}
	}
	finish(EvacuationDone, nil)
}

// rebalanceFrom moves src's bindings until dsts is paid: clients that are
// not connected first (moving them costs no session takeover), connected
// ones only if those do not suffice.
func (a *Agent) rebalanceFrom(ctx context.Context, r *rebalance, tick *time.Ticker, b *Backend, src string, dsts map[string]int) error {
	owed := 0
	for _, n := range dsts {
		owed += n
	}
	for _, connected := range []bool{false, true} {
		if owed == 0 {
			return nil
		}
		var err error
		if owed, err = a.rebalancePass(ctx, r, tick, b, src, dsts, owed, connected); err != nil {
			return err
		}
	}
	return nil
}

// rebalancePass walks src's bindings once, moving those whose connected
// state is connected, and returns what is still owed.
func (a *Agent) rebalancePass(ctx context.Context, r *rebalance, tick *time.Ticker, b *Backend, src string, dsts map[string]int, owed int, connected bool) (int, error) {
	cursor := ""
	for owed > 0 {
		page, err := a.store.List(ctx, b.Name, store.ListOptions{Server: src, Cursor: cursor, Limit: 200})
		if err != nil {
			return owed, fmt.Errorf("list bindings of %s: %w", src, err)
		}
		for _, it := range page.Items {
			if owed == 0 {
				return 0, nil
			}
			if it.Connected != connected {
				continue // the other pass's
			}
			if it.Server != src || it.Pinned {
				r.update(func(s *RebalanceStatus) { s.Skipped++ })
				continue
			}
			dst := ""
			for d, n := range dsts {
				if n > 0 && (dst == "" || d < dst) {
					dst = d
				}
			}
			select {
			case <-ctx.Done():
				return owed, ctx.Err()
			case <-tick.C:
			}
			opCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
			got, err := a.store.Move(opCtx, b.Name, it.ClientID, src, dst, it.TTL)
			cancel()
			switch {
			case err != nil:
				r.update(func(s *RebalanceStatus) { s.Failed++ })
				a.evacLog.Warn("rebalance: move failed", "backend", b.Name, "server", src, "err", err)
			case got.Server == dst:
				r.update(func(s *RebalanceStatus) { s.Moved++ })
				dsts[dst]--
				owed--
			default:
				r.update(func(s *RebalanceStatus) { s.Skipped++ })
			}
		}
		if cursor = page.NextCursor; cursor == "" {
			return owed, nil // fewer movable bindings than planned (pinned ones)
		}
	}
	return owed, nil
}
