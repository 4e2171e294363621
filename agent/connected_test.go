package agent

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stickyd/stickyd/config"
	"github.com/stickyd/stickyd/internal/tablekey"
	"github.com/stickyd/stickyd/store"
	"github.com/stickyd/stickyd/store/memory"
)

// fakeConnected lists the table keys of the ids it holds.
type fakeConnected struct {
	mu    sync.Mutex
	ids   []string
	err   error
	calls int
}

func (f *fakeConnected) set(ids ...string) { f.mu.Lock(); f.ids = ids; f.mu.Unlock() }

func (f *fakeConnected) ConnectedKeys(_ context.Context, backend string, batch int, fn func([]tableKey) error) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.err != nil {
		return f.err
	}
	var keys []tableKey
	for _, id := range f.ids {
		keys = append(keys, tablekey.Of([]byte(id)))
		if len(keys) == batch {
			if err := fn(keys); err != nil {
				return err
			}
			keys = nil
		}
	}
	if len(keys) > 0 {
		return fn(keys)
	}
	return nil
}

func connectedCfg(ttl time.Duration) *config.Config {
	cfg := coherenceCfg()
	cfg.TTL = config.Duration(ttl)
	cfg.StoreTimeout = config.Duration(time.Second)
	cfg.HAProxy.LocalSize = 1000
	return cfg
}

func TestConnectedEvery(t *testing.T) {
	for ttl, want := range map[time.Duration]time.Duration{
		0: time.Minute, time.Second: 500 * time.Millisecond, 3 * time.Second: time.Second,
		30 * time.Minute: time.Minute, 90 * time.Second: 30 * time.Second,
	} {
		if got := ConnectedEvery(ttl); got != want {
			t.Errorf("ConnectedEvery(%v) = %v, want %v", ttl, got, want)
		}
	}
}

func TestConnectedRefresh(t *testing.T) {
	ctx := context.Background()
	cfg := connectedCfg(3 * time.Second)
	st := memory.New(memory.Options{})
	defer st.Close()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ag, err := New(cfg, st, log, Options{})
	if err != nil {
		t.Fatal(err)
	}
	src := &fakeConnected{}
	c := NewConnected(cfg, src, st, log)
	ag.SetConnected(c)

	// Answered by the agent: known without a walk. A session expiry above
	// the ttl is the binding's ttl.
	q := &Query{Backend: "mqtt", ClientID: []byte("answered"), SessionExpiry: time.Hour}
	if d := ag.Decide(ctx, q); d.Server == "" {
		t.Fatalf("decision %+v", d)
	}
	// Bound by another agent (or before a restart): found by walking.
	if err := st.Put(ctx, store.Binding{Backend: "mqtt", ClientID: "elsewhere", Server: "n1", TTL: 2 * time.Second}); err != nil {
		t.Fatal(err)
	}
	// Connected but evicted: never re-created.
	src.set("answered", "elsewhere", "evicted")
	touched, unknown := c.Refresh(ctx, "mqtt")
	if touched != 2 || unknown != 1 {
		t.Fatalf("cycle touched %d, unknown %d; want 2, 1 (the evicted id)", touched, unknown)
	}
	a, err := st.Get(ctx, "mqtt", "answered")
	if err != nil || !a.Connected || a.TTL < time.Hour {
		t.Errorf("answered: %+v, %v; want connected, ttl above an hour", a, err)
	}
	e, err := st.Get(ctx, "mqtt", "elsewhere")
	if err != nil || !e.Connected || e.TTL < 3*time.Second {
		t.Errorf("elsewhere: %+v, %v; want connected, ttl raised to ttl+period", e, err)
	}
	if _, err := st.Get(ctx, "mqtt", "evicted"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("evicted: %v, want not found", err)
	}
	// The walk is not repeated every cycle for what stays unknown.
	if touched, unknown = c.Refresh(ctx, "mqtt"); touched != 2 || unknown != 1 {
		t.Errorf("second cycle touched %d, unknown %d; want 2, 1", touched, unknown)
	}
	// HAProxy fails: nothing touched, the next cycle tries again.
	src.err = errors.New("socket gone")
	if touched, _ = c.Refresh(ctx, "mqtt"); touched != 0 {
		t.Errorf("failed listing touched %d", touched)
	}
	// Forgotten once neither answered nor connected for the ttl.
	src.err = nil
	src.set()
	c.prune("mqtt", time.Now().Add(4*time.Second))
	if n := len(c.ids["mqtt"]); n != 0 {
		t.Errorf("%d ids kept after pruning", n)
	}
}

// Without a Toucher store there is nothing to refresh.
func TestConnectedNeedsToucher(t *testing.T) {
	var st struct{ store.Store }
	if c := NewConnected(connectedCfg(time.Second), &fakeConnected{}, st, slog.Default()); c != nil {
		t.Error("NewConnected over a store without TouchConnected")
	}
}
