package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/stickyd/stickyd/config"
	"github.com/stickyd/stickyd/store"
)

// fakeStore is a minimal map for unit tests; the real stores are tested by
// store/storetest and end to end.
type fakeStore struct {
	mu       sync.Mutex
	m        map[string]store.Binding
	lastTTL  time.Duration
	err      error
	draining map[string]bool
}

func newFake() *fakeStore {
	return &fakeStore{m: map[string]store.Binding{}, draining: map[string]bool{}}
}

func (f *fakeStore) GetOrClaim(_ context.Context, be, id, proposed string, ttl time.Duration) (store.Claim, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return store.Claim{}, f.err
	}
	f.lastTTL = ttl
	if b, ok := f.m[be+"\x00"+id]; ok {
		return store.Claim{Server: b.Server, Pinned: b.Pinned}, nil
	}
	f.m[be+"\x00"+id] = store.Binding{Backend: be, ClientID: id, Server: proposed, TTL: ttl}
	return store.Claim{Server: proposed, Claimed: true}, nil
}

func (f *fakeStore) Move(_ context.Context, be, id, from, to string, ttl time.Duration) (store.Claim, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return store.Claim{}, f.err
	}
	b, ok := f.m[be+"\x00"+id]
	if !ok || (b.Server == from && !b.Pinned) {
		f.m[be+"\x00"+id] = store.Binding{Backend: be, ClientID: id, Server: to, TTL: ttl}
		return store.Claim{Server: to, Claimed: true}, nil
	}
	return store.Claim{Server: b.Server, Pinned: b.Pinned}, nil
}

func (f *fakeStore) Get(_ context.Context, be, id string) (store.Binding, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if b, ok := f.m[be+"\x00"+id]; ok {
		return b, nil
	}
	return store.Binding{}, store.ErrNotFound
}

func (f *fakeStore) Put(_ context.Context, b store.Binding) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.m[b.Backend+"\x00"+b.ClientID] = b
	return nil
}

func (f *fakeStore) Delete(context.Context, string, string) error { return nil }
func (f *fakeStore) List(context.Context, string, store.ListOptions) (store.Page, error) {
	return store.Page{}, nil
}
func (f *fakeStore) CountByServer(context.Context, string) (map[string]int, error) { return nil, nil }
func (f *fakeStore) DeleteByServer(context.Context, string, string) (int, error)   { return 0, nil }
func (f *fakeStore) Inline() store.Inline                                          { return nil }
func (f *fakeStore) Stats() store.Stats                                            { return store.Stats{} }
func (f *fakeStore) SetDraining(_ context.Context, _, s string, d bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.draining[s] = d
	return nil
}
func (f *fakeStore) Draining(context.Context, string) (map[string]bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]bool{}
	for k, v := range f.draining {
		if v {
			out[k] = true
		}
	}
	return out, nil
}
func (f *fakeStore) Ping(context.Context) error { return f.err }
func (f *fakeStore) Close() error               { return nil }

func testConfig(weights ...int) *config.Config {
	cfg := config.Default()
	b := config.Backend{Name: "mqtt", Key: config.KeyClientID}
	for i, w := range weights {
		b.Servers = append(b.Servers, config.Server{Name: fmt.Sprintf("n%d", i+1), Address: fmt.Sprintf("127.0.0.1:%d", 1883+i), Weight: w})
	}
	cfg.Backends = []config.Backend{b}
	return &cfg
}

func newAgent(t *testing.T, st store.Store, weights ...int) *Agent {
	t.Helper()
	a, err := New(testConfig(weights...), st, slog.New(slog.NewTextHandler(io.Discard, nil)), Options{})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func query(id string, up ...bool) *Query {
	q := &Query{Backend: "mqtt", ClientID: []byte(id)}
	for i, u := range up {
		q.SetUp(i, u)
	}
	return q
}

func TestRendezvousIsStableAndWeighted(t *testing.T) {
	a := newAgent(t, newFake(), 1, 3)
	b := a.Backend("mqtt")
	counts := map[string]int{}
	for i := 0; i < 20000; i++ {
		key := []byte(fmt.Sprintf("client-%d", i))
		s := b.Place(key)
		if s != b.Place(key) {
			t.Fatal("placement is not deterministic")
		}
		counts[s]++
	}
	share := float64(counts["n2"]) / 20000
	if math.Abs(share-0.75) > 0.02 {
		t.Fatalf("weight 3 of 4 got share %.3f (counts %v)", share, counts)
	}
}

func TestRendezvousMovesOnlyTheLostServersKeys(t *testing.T) {
	a := newAgent(t, newFake(), 1, 1, 1)
	b := a.Backend("mqtt")
	all := func(int) bool { return true }
	noN2 := func(i int) bool { return i != 1 }
	for i := 0; i < 5000; i++ {
		k := []byte(fmt.Sprintf("c%d", i))
		before, after := b.rendezvous(k, all), b.rendezvous(k, noN2)
		if before != 1 && before != after {
			t.Fatalf("key on n%d moved to n%d when n2 went away", before+1, after+1)
		}
	}
}

// decideMode runs the decision table through Decide, or through TryDecide
// on a store that answers inline (falling back to Decide when it cannot),
// as the SPOE adapter does.
type decideMode struct {
	name   string
	inline bool
}

func (m decideMode) newAgent(t *testing.T, st *fakeStore, weights ...int) *Agent {
	t.Helper()
	if m.inline {
		return newAgent(t, &inlineFake{fakeStore: st}, weights...)
	}
	return newAgent(t, st, weights...)
}

func (m decideMode) decide(a *Agent, q *Query) Decision {
	if m.inline {
		if d, ok := a.TryDecide(q); ok {
			return d
		}
	}
	return a.Decide(context.Background(), q)
}

func TestDecide(t *testing.T) {
	for _, m := range []decideMode{{"Decide", false}, {"TryDecide", true}} {
		t.Run(m.name, func(t *testing.T) { testDecide(t, m) })
	}
}

func testDecide(t *testing.T, m decideMode) {
	ctx := context.Background()
	t.Run("no client id gives no answer", func(t *testing.T) {
		a := m.newAgent(t, newFake(), 1, 1)
		if d := m.decide(a, query("")); d.Server != "" || d.Outcome != OutcomeNoKey {
			t.Fatalf("%+v", d)
		}
	})
	t.Run("unknown backend gives no answer", func(t *testing.T) {
		a := m.newAgent(t, newFake(), 1, 1)
		q := query("c1")
		q.Backend = "nope"
		if d := m.decide(a, q); d.Server != "" || d.Outcome != OutcomeUnknownBackend {
			t.Fatalf("%+v", d)
		}
	})
	t.Run("placed then existing", func(t *testing.T) {
		a := m.newAgent(t, newFake(), 1, 1)
		d1 := m.decide(a, query("c1", true, true))
		d2 := m.decide(a, query("c1", true, true))
		if d1.Outcome != OutcomePlaced || d2.Outcome != OutcomeExisting || d1.Server != d2.Server || d1.Server != a.Backend("mqtt").Place([]byte("c1")) {
			t.Fatalf("%+v %+v", d1, d2)
		}
	})
	t.Run("existing binding wins over the hash", func(t *testing.T) {
		st := newFake()
		a := m.newAgent(t, st, 1, 1)
		other := "n1"
		if a.Backend("mqtt").Place([]byte("c1")) == "n1" {
			other = "n2"
		}
		_ = st.Put(ctx, store.Binding{Backend: "mqtt", ClientID: "c1", Server: other})
		if d := m.decide(a, query("c1", true, true)); d.Server != other || d.Outcome != OutcomeExisting {
			t.Fatalf("%+v", d)
		}
	})
	t.Run("binding to a down server moves", func(t *testing.T) {
		st := newFake()
		a := m.newAgent(t, st, 1, 1)
		_ = st.Put(ctx, store.Binding{Backend: "mqtt", ClientID: "c1", Server: "n1"})
		d := m.decide(a, query("c1", false, true))
		if d.Server != "n2" || d.Outcome != OutcomeMoved {
			t.Fatalf("%+v", d)
		}
		if b, _ := st.Get(ctx, "mqtt", "c1"); b.Server != "n2" {
			t.Fatalf("binding did not follow: %+v", b)
		}
		// n1 back: the client stays where it was moved.
		if d := m.decide(a, query("c1", true, true)); d.Server != "n2" || d.Outcome != OutcomeExisting {
			t.Fatalf("%+v", d)
		}
	})
	t.Run("pinned to a down server keeps its binding", func(t *testing.T) {
		st := newFake()
		a := m.newAgent(t, st, 1, 1)
		_ = st.Put(ctx, store.Binding{Backend: "mqtt", ClientID: "c1", Server: "n1", Pinned: true})
		d := m.decide(a, query("c1", false, true))
		if d.Server != "n2" || d.Outcome != OutcomePinnedDown {
			t.Fatalf("%+v", d)
		}
		if b, _ := st.Get(ctx, "mqtt", "c1"); b.Server != "n1" {
			t.Fatalf("pinned binding moved: %+v", b)
		}
	})
	t.Run("binding to an unconfigured server moves", func(t *testing.T) {
		st := newFake()
		a := m.newAgent(t, st, 1, 1)
		_ = st.Put(ctx, store.Binding{Backend: "mqtt", ClientID: "c1", Server: "gone"})
		if d := m.decide(a, query("c1", true, true)); d.Outcome != OutcomeMoved || d.Server == "gone" {
			t.Fatalf("%+v", d)
		}
	})
	t.Run("store failure falls back to the hash", func(t *testing.T) {
		st := newFake()
		st.err = errors.New("connection refused")
		a := m.newAgent(t, st, 1, 1)
		d := m.decide(a, query("c1", true, true))
		if d.Outcome != OutcomeFallback || d.Server != a.Backend("mqtt").Place([]byte("c1")) {
			t.Fatalf("%+v", d)
		}
		if a.Stats().StoreErrors != 1 {
			t.Fatal("store error not counted")
		}
	})
	t.Run("every server down gives no answer", func(t *testing.T) {
		a := m.newAgent(t, newFake(), 1, 1)
		if d := m.decide(a, query("c1", false, false)); d.Server != "" || d.Outcome != OutcomeNoServer {
			t.Fatalf("%+v", d)
		}
	})
	t.Run("draining server gets no new clients", func(t *testing.T) {
		st := newFake()
		a := m.newAgent(t, st, 1, 1)
		_ = st.Put(ctx, store.Binding{Backend: "mqtt", ClientID: "bound", Server: "n1"})
		_ = st.SetDraining(ctx, "mqtt", "n1", true)
		if err := a.RefreshDraining(ctx); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 200; i++ {
			if d := m.decide(a, query(fmt.Sprintf("new-%d", i), true, true)); d.Server != "n2" {
				t.Fatalf("new client placed on draining n1: %+v", d)
			}
		}
		if d := m.decide(a, query("bound", true, true)); d.Server != "n1" {
			t.Fatalf("bound client left the draining server: %+v", d)
		}
	})
	t.Run("all draining still places", func(t *testing.T) {
		st := newFake()
		a := m.newAgent(t, st, 1, 1)
		_ = st.SetDraining(ctx, "mqtt", "n1", true)
		_ = st.SetDraining(ctx, "mqtt", "n2", true)
		_ = a.RefreshDraining(ctx)
		if d := m.decide(a, query("c1", true, true)); d.Server == "" {
			t.Fatalf("%+v", d)
		}
	})
	t.Run("session expiry lengthens the ttl, up to max_ttl", func(t *testing.T) {
		st := newFake()
		a := m.newAgent(t, st, 1, 1)
		for i, tc := range []struct{ expiry, want time.Duration }{
			{0, 30 * time.Minute},
			{time.Second, 30 * time.Minute}, // ttl is the floor
			{12 * time.Hour, 12 * time.Hour},
			{48 * time.Hour, 24 * time.Hour},               // max_ttl (default 24h) caps it
			{math.MaxUint32 * time.Second, 24 * time.Hour}, // MQTT's "never expires"
		} {
			q := query(fmt.Sprintf("c%d", i), true, true)
			q.SessionExpiry = tc.expiry
			m.decide(a, q)
			if st.lastTTL != tc.want {
				t.Fatalf("session expiry %v: ttl %v, want %v", tc.expiry, st.lastTTL, tc.want)
			}
		}
	})
	t.Run("username key", func(t *testing.T) {
		cfg := testConfig(1, 1)
		cfg.Backends[0].Key = config.KeyUsername
		var st store.Store = newFake()
		if m.inline {
			st = &inlineFake{fakeStore: newFake()}
		}
		a, _ := New(cfg, st, slog.New(slog.NewTextHandler(io.Discard, nil)), Options{})
		q := query("cid", true, true)
		if d := m.decide(a, q); d.Outcome != OutcomeNoKey {
			t.Fatalf("no username: %+v", d)
		}
		q.Username = []byte("alice")
		if d := m.decide(a, q); d.Server != a.Backend("mqtt").Place([]byte("alice")) {
			t.Fatalf("%+v", d)
		}
	})
	t.Run("reported states are kept for the API", func(t *testing.T) {
		a := m.newAgent(t, newFake(), 1, 1)
		m.decide(a, query("c1", true, false))
		st := a.Backend("mqtt").States()
		if !st[0].Up || st[1].Up || !st[1].Reported {
			t.Fatalf("%+v", st)
		}
	})
}

func BenchmarkDecideWarm(b *testing.B) {
	st := newFake()
	a, _ := New(testConfig(1, 1), st, slog.New(slog.NewTextHandler(io.Discard, nil)), Options{})
	q := query("warm-client", true, true)
	a.Decide(context.Background(), q)
	b.ReportAllocs()
	for b.Loop() {
		a.Decide(context.Background(), q)
	}
}
