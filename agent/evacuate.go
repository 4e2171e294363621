package agent

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/stickyd/stickyd/store"
)

// Sentinel errors of the evacuation API.
var (
	ErrUnknownBackend    = errors.New("unknown backend")
	ErrUnknownServer     = errors.New("unknown server")
	ErrEvacuationRunning = errors.New("an evacuation of this server is already running")
	ErrBadRate           = errors.New("rate must be between 1 and 100000 bindings per second")
)

// Evacuation states.
const (
	EvacuationRunning   = "running"
	EvacuationDone      = "done"
	EvacuationCancelled = "cancelled"
	EvacuationFailed    = "failed"
)

// EvacuationStatus is the progress of moving a server's bindings away.
type EvacuationStatus struct {
	Backend  string
	Server   string
	Rate     int // bindings per second
	State    string
	Moved    int // bindings moved to another server
	Skipped  int // pinned, or moved elsewhere meanwhile
	Failed   int // store errors or no other server to go to
	Error    string
	Started  time.Time
	Finished time.Time // zero while running
}

type evacuation struct {
	mu     sync.Mutex
	st     EvacuationStatus
	cancel context.CancelFunc
	done   chan struct{}
}

func (e *evacuation) status() EvacuationStatus {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.st
}

func (e *evacuation) update(fn func(*EvacuationStatus)) {
	e.mu.Lock()
	fn(&e.st)
	e.mu.Unlock()
}

// Evacuate starts moving a server's bindings to the other servers at rate
// bindings per second, so clients reconnecting later land elsewhere
// without a takeover storm. It first marks the server draining (in the
// store, for every agent), so no new client is placed on it meanwhile.
// Pinned bindings stay. Progress is kept in this process only.
func (a *Agent) Evacuate(ctx context.Context, backend, server string, rate int) (EvacuationStatus, error) {
	b := a.backends[backend]
	if b == nil {
		return EvacuationStatus{}, fmt.Errorf("%w %q", ErrUnknownBackend, backend)
	}
	idx := b.ServerIndex(server)
	if idx < 0 {
		return EvacuationStatus{}, fmt.Errorf("%w %q in backend %q", ErrUnknownServer, server, backend)
	}
	if rate < 1 || rate > 100000 {
		return EvacuationStatus{}, ErrBadRate
	}
	key := backend + "/" + server
	a.evacMu.Lock()
	defer a.evacMu.Unlock()
	if e := a.evacuations[key]; e != nil && e.status().State == EvacuationRunning {
		return e.status(), ErrEvacuationRunning
	}
	if err := a.store.SetDraining(ctx, backend, server, true); err != nil {
		return EvacuationStatus{}, fmt.Errorf("evacuate: drain %s first: %w", server, err)
	}
	if err := a.RefreshDraining(ctx); err != nil {
		a.log.Warn("evacuate: drain state refresh failed; other agents pick it up on their next poll", "err", err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	e := &evacuation{
		st:     EvacuationStatus{Backend: backend, Server: server, Rate: rate, State: EvacuationRunning, Started: time.Now()},
		cancel: cancel,
		done:   make(chan struct{}),
	}
	a.evacuations[key] = e
	go a.runEvacuation(runCtx, e, b, idx)
	return e.status(), nil
}

// EvacuationStatus returns the last evacuation of a server, if any.
func (a *Agent) EvacuationStatus(backend, server string) (EvacuationStatus, bool) {
	a.evacMu.Lock()
	e := a.evacuations[backend+"/"+server]
	a.evacMu.Unlock()
	if e == nil {
		return EvacuationStatus{}, false
	}
	return e.status(), true
}

// CancelEvacuation stops a running evacuation and waits for it to stop.
// The server stays draining.
func (a *Agent) CancelEvacuation(backend, server string) (EvacuationStatus, bool) {
	a.evacMu.Lock()
	e := a.evacuations[backend+"/"+server]
	a.evacMu.Unlock()
	if e == nil {
		return EvacuationStatus{}, false
	}
	e.cancel()
	<-e.done
	return e.status(), true
}

// StopEvacuations cancels every running evacuation (at shutdown).
func (a *Agent) StopEvacuations() {
	a.evacMu.Lock()
	all := make([]*evacuation, 0, len(a.evacuations))
	for _, e := range a.evacuations {
		all = append(all, e)
	}
	a.evacMu.Unlock()
	for _, e := range all {
		e.cancel()
		<-e.done
	}
}

func (a *Agent) runEvacuation(ctx context.Context, e *evacuation, b *Backend, idx int) {
	defer close(e.done)
	server := b.Servers[idx].Name
	tick := time.NewTicker(time.Second / time.Duration(e.st.Rate))
	defer tick.Stop()
	finish := func(state string, err error) {
		e.update(func(s *EvacuationStatus) {
			s.State, s.Finished = state, time.Now()
			if err != nil {
				s.Error = err.Error()
			}
		})
		a.log.Info("evacuation ended", "backend", b.Name, "server", server, "state", state, "moved", e.status().Moved, "err", err)
	}
	// Two passes: the second catches bindings a reconnect refreshed onto
	// the server while the first was walking (it is draining by then).
	for pass := 0; pass < 2; pass++ {
		cursor := ""
		for {
			page, err := a.store.List(ctx, b.Name, store.ListOptions{Server: server, Cursor: cursor, Limit: 200})
			if err != nil {
				if ctx.Err() != nil {
					finish(EvacuationCancelled, nil)
				} else {
					finish(EvacuationFailed, fmt.Errorf("list bindings: %w", err))
				}
				return
			}
			for _, it := range page.Items {
				if it.Server != server {
					continue
				}
				if it.Pinned {
					if pass == 0 { // seen again in the second pass: count once
						e.update(func(s *EvacuationStatus) { s.Skipped++ })
					}
					continue
				}
				select {
				case <-ctx.Done():
					finish(EvacuationCancelled, nil)
					return
				case <-tick.C:
				}
				a.evacuateOne(ctx, e, b, idx, it)
			}
			if cursor = page.NextCursor; cursor == "" {
				break
			}
		}
	}
	finish(EvacuationDone, nil)
}

func (a *Agent) evacuateOne(ctx context.Context, e *evacuation, b *Backend, idx int, it store.Binding) {
	target := b.placeExcept([]byte(it.ClientID), idx)
	if target == "" {
		e.update(func(s *EvacuationStatus) { s.Failed++ })
		return
	}
	opCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	got, err := a.store.Move(opCtx, b.Name, it.ClientID, it.Server, target, it.TTL)
	switch {
	case err != nil:
		e.update(func(s *EvacuationStatus) { s.Failed++ })
		a.evacLog.Warn("evacuation: move failed", "backend", b.Name, "server", it.Server, "err", err)
	case got.NotStored: // gone meanwhile, and no room to bind it anew
		e.update(func(s *EvacuationStatus) { s.Skipped++ })
	case got.Server == target:
		e.update(func(s *EvacuationStatus) { s.Moved++ })
	default:
		e.update(func(s *EvacuationStatus) { s.Skipped++ })
	}
}
