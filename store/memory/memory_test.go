package memory

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stickyd/stickyd/internal/testenv"
	"github.com/stickyd/stickyd/store"
	"github.com/stickyd/stickyd/store/storetest"
)

func newTestStore(t testing.TB, clock *storetest.FakeClock) *Store {
	s := New(Options{Now: clock.Now, SweepInterval: 10 * time.Millisecond})
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestContract(t *testing.T) {
	clock := storetest.NewFakeClock()
	storetest.Run(t, func(t *testing.T) store.Store { return newTestStore(t, clock) }, clock)
}

// The contract suite with chunks of 3 entries, so every chunked walk
// (sweep, DeleteByServer) crosses many chunk borders.
func TestContractSmallChunks(t *testing.T) {
	old := sweepChunk
	sweepChunk = 3
	t.Cleanup(func() { sweepChunk = old })
	clock := storetest.NewFakeClock()
	storetest.Run(t, func(t *testing.T) store.Store { return newTestStore(t, clock) }, clock)
}

func TestSweeperRemovesExpired(t *testing.T) {
	ctx := context.Background()
	clock := storetest.NewFakeClock()
	s := newTestStore(t, clock)
	for i := range 5000 {
		ttl := time.Minute
		if i%2 == 0 {
			ttl = 0 // never expires
		}
		if _, err := s.GetOrClaim(ctx, "be", fmt.Sprintf("c%05d", i), fmt.Sprintf("s%d", i%4), ttl); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.Len("be"); n != 5000 {
		t.Fatalf("Len = %d", n)
	}
	clock.Advance(2 * time.Minute)
	// Nothing reads the map: only the sweeper can shrink it.
	testenv.Eventually(t, 5*time.Second, func() error {
		if n := s.Len("be"); n != 2500 {
			return fmt.Errorf("Len = %d, want 2500", n)
		}
		return nil
	})
	b := s.backend("be")
	b.mu.RLock()
	counts := map[string]int{}
	for k, v := range b.counts {
		counts[k] = v
	}
	b.mu.RUnlock()
	want := map[string]int{"s0": 1250, "s2": 1250}
	if fmt.Sprint(counts) != fmt.Sprint(want) {
		t.Fatalf("counts after sweep = %v, want %v", counts, want)
	}
	if got := b.minExp.Load(); got != never {
		t.Fatalf("minExp = %d after sweeping every expiring entry, want never", got)
	}
}

// Counts stay exact under concurrent claims, moves, deletes and expiry.
func TestCountsStayExact(t *testing.T) {
	ctx := context.Background()
	clock := storetest.NewFakeClock()
	s := newTestStore(t, clock)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 3000 {
				id := fmt.Sprintf("c%d", (i*7+w)%500)
				srv := fmt.Sprintf("s%d", (i+w)%3)
				switch i % 5 {
				case 0, 1:
					_, _ = s.GetOrClaim(ctx, "be", id, srv, time.Duration(1+i%3)*time.Second)
				case 2:
					_, _ = s.Move(ctx, "be", id, srv, fmt.Sprintf("s%d", (i+1)%3), time.Second)
				case 3:
					_ = s.Delete(ctx, "be", id)
				case 4:
					_, _ = s.DeleteByServer(ctx, "be", srv)
				}
				if i%100 == 0 {
					clock.Advance(500 * time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	got, err := s.CountByServer(ctx, "be")
	if err != nil {
		t.Fatal(err)
	}
	// Recount by brute force.
	want := map[string]int{}
	now := clock.Now().UnixNano()
	b := s.backend("be")
	b.mu.RLock()
	b.tree.Ascend(func(it item) bool {
		if it.e.live(now) {
			want[it.e.server]++
		}
		return true
	})
	b.mu.RUnlock()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("CountByServer = %v, brute force = %v", got, want)
	}
}

// CountByServer is exact even before the sweeper runs, and cheap when
// nothing has expired.
func TestCountSweepsOnlyWhenNeeded(t *testing.T) {
	ctx := context.Background()
	clock := storetest.NewFakeClock()
	s := New(Options{Now: clock.Now, SweepInterval: time.Hour}) // sweeper never fires
	t.Cleanup(func() { _ = s.Close() })
	for i := range 10 {
		if _, err := s.GetOrClaim(ctx, "be", fmt.Sprint(i), "s", time.Duration(i+1)*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	clock.Advance(5500 * time.Millisecond)
	c, err := s.CountByServer(ctx, "be")
	if err != nil || c["s"] != 5 {
		t.Fatalf("CountByServer = %v, %v; want s:5", c, err)
	}
	if n := s.Len("be"); n != 5 {
		t.Fatalf("Len = %d after counting, want the 5 live ones", n)
	}
	b := s.backend("be")
	if got, want := b.minExp.Load(), clock.Now().Add(500*time.Millisecond).UnixNano(); got != want {
		t.Fatalf("minExp = %d, want %d (the next expiry)", got, want)
	}
}

// With a server filter a page visits a bounded number of entries, so a rare
// server in a big backend comes back through short pages with a cursor.
func TestListServerFilterBoundedWork(t *testing.T) {
	ctx := context.Background()
	clock := storetest.NewFakeClock()
	s := newTestStore(t, clock)
	for i := range 5000 {
		srv := "common"
		if i == 4999 {
			srv = "rare"
		}
		if err := s.Put(ctx, store.Binding{Backend: "be", ClientID: fmt.Sprintf("c%05d", i), Server: srv}); err != nil {
			t.Fatal(err)
		}
	}
	p, err := s.List(ctx, "be", store.ListOptions{Server: "rare", Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Items) != 0 || p.NextCursor == "" {
		t.Fatalf("first page = %d items, cursor %q; want an empty page with a cursor", len(p.Items), p.NextCursor)
	}
	pages := 1
	var found []store.Binding
	for p.NextCursor != "" {
		if p, err = s.List(ctx, "be", store.ListOptions{Server: "rare", Limit: 10, Cursor: p.NextCursor}); err != nil {
			t.Fatal(err)
		}
		found = append(found, p.Items...)
		pages++
	}
	if len(found) != 1 || found[0].ClientID != "c04999" {
		t.Fatalf("found %+v", found)
	}
	if pages != 5 { // 1100 entries per page
		t.Fatalf("%d pages, want 5", pages)
	}
}

// Items come in client-id order; a full last page has no trailing cursor.
func TestListOrdered(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t, storetest.NewFakeClock())
	for _, id := range []string{"b", "a", "\xff", "", "ab", "a\x00"} {
		if err := s.Put(ctx, store.Binding{Backend: "be", ClientID: id, Server: "s"}); err != nil {
			t.Fatal(err)
		}
	}
	p, err := s.List(ctx, "be", store.ListOptions{Limit: 6})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, b := range p.Items {
		ids = append(ids, b.ClientID)
	}
	if got, want := fmt.Sprintf("%q", ids), fmt.Sprintf("%q", []string{"", "a", "a\x00", "ab", "b", "\xff"}); got != want {
		t.Fatalf("ids = %s, want %s", got, want)
	}
	if p.NextCursor != "" {
		t.Fatalf("NextCursor = %q, want none", p.NextCursor)
	}
	p, err = s.List(ctx, "be", store.ListOptions{Limit: 6, Prefix: "\xff"})
	if err != nil || len(p.Items) != 1 || p.NextCursor != "" {
		t.Fatalf("prefix 0xff: %+v, %v", p, err)
	}
}

func TestPrefixEnd(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"", "", false},
		{"a", "b", true},
		{"a\xff", "b", true},
		{"\xff\xff", "", false},
		{"ab\x00", "ab\x01", true},
	} {
		got, ok := prefixEnd(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("prefixEnd(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestWarmGetOrClaimAllocs(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t, storetest.NewFakeClock())
	if _, err := s.GetOrClaim(ctx, "be", "client-1", "s1", time.Minute); err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(1000, func() {
		_, _ = s.GetOrClaim(ctx, "be", "client-1", "s2", time.Minute)
	})
	if allocs != 0 {
		t.Fatalf("warm GetOrClaim allocates %v times per call, want 0", allocs)
	}
}

// Past MaxBindings a new client gets its proposed server, unstored, on
// both paths; existing bindings, other backends and Put are not limited,
// and an expired entry counts until the sweeper removes it.
func TestMaxBindings(t *testing.T) {
	ctx := context.Background()
	clock := storetest.NewFakeClock()
	s := New(Options{Now: clock.Now, SweepInterval: 10 * time.Millisecond, MaxBindings: 5})
	t.Cleanup(func() { _ = s.Close() })
	for i := range 5 {
		if c, _ := s.GetOrClaim(ctx, "be", fmt.Sprint("c", i), "s1", time.Minute); !c.Claimed || c.NotStored {
			t.Fatalf("claim %d = %+v", i, c)
		}
	}
	if c, _ := s.GetOrClaim(ctx, "be", "c5", "s2", time.Minute); c != (store.Claim{Server: "s2", NotStored: true}) {
		t.Fatalf("claim past the cap = %+v", c)
	}
	if c, ok := s.TryGetOrClaim("be", []byte("c6"), "s2", time.Minute); !ok || c != (store.Claim{Server: "s2", NotStored: true}) {
		t.Fatalf("inline claim past the cap = %+v, %v", c, ok)
	}
	if c, _ := s.Move(ctx, "be", "c7", "s1", "s2", time.Minute); c != (store.Claim{Server: "s2", NotStored: true}) {
		t.Fatalf("move of an absent binding past the cap = %+v", c)
	}
	if c, _ := s.Move(ctx, "be", "c1", "s1", "s2", time.Minute); !c.Claimed || c.Server != "s2" {
		t.Fatalf("move of a present binding at the cap = %+v", c)
	}
	if c, _ := s.GetOrClaim(ctx, "be", "c0", "s2", time.Minute); c.Server != "s1" || c.NotStored {
		t.Fatalf("existing binding at the cap = %+v", c)
	}
	if _, err := s.Get(ctx, "be", "c5"); err != store.ErrNotFound {
		t.Fatalf("Get of an unstored client = %v", err)
	}
	if c, _ := s.GetOrClaim(ctx, "other", "c5", "s1", time.Minute); !c.Claimed {
		t.Fatalf("another backend = %+v", c)
	}
	if err := s.Put(ctx, store.Binding{Backend: "be", ClientID: "admin", Server: "s1"}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Minute) // all but "admin" expire
	testenv.Eventually(t, 5*time.Second, func() error {
		if c, _ := s.GetOrClaim(ctx, "be", "late", "s1", time.Minute); !c.Claimed {
			return fmt.Errorf("claim after expiry = %+v", c)
		}
		return nil
	})
}
