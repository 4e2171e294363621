package agent

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/stickyd/stickyd/config"
	"github.com/stickyd/stickyd/store"
	"github.com/stickyd/stickyd/store/memory"
)

func TestPlanRebalance(t *testing.T) {
	for _, tc := range []struct {
		name      string
		counts    map[string]int
		weights   map[string]int
		tol       float64
		wantTotal int
		wantMoves map[[2]string]int
	}{
		{"scale-out 1:1:1", map[string]int{"n1": 1500, "n2": 1500}, map[string]int{"n1": 1, "n2": 1, "n3": 1}, 0.05, 950,
			map[[2]string]int{{"n1", "n3"}: 475, {"n2", "n3"}: 475}},
		{"exact", map[string]int{"n1": 1500, "n2": 1500}, map[string]int{"n1": 1, "n2": 1, "n3": 1}, 0, 1000,
			map[[2]string]int{{"n1", "n3"}: 500, {"n2", "n3"}: 500}},
		{"already within", map[string]int{"n1": 1020, "n2": 980, "n3": 1000}, map[string]int{"n1": 1, "n2": 1, "n3": 1}, 0.05, 0, map[[2]string]int{}},
		{"weights 2:1", map[string]int{"n1": 0, "n2": 300}, map[string]int{"n1": 2, "n2": 1}, 0, 200, map[[2]string]int{{"n2", "n1"}: 200}},
		{"tiny", map[string]int{"n1": 1}, map[string]int{"n1": 1, "n2": 1}, 0, 0, map[[2]string]int{}},
		{"empty", map[string]int{}, map[string]int{"n1": 1, "n2": 1}, 0.05, 0, map[[2]string]int{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			moves, _, total := PlanRebalance(tc.counts, tc.weights, tc.tol)
			if total != tc.wantTotal || len(moves) != len(tc.wantMoves) {
				t.Fatalf("total %d moves %v, want %d %v", total, moves, tc.wantTotal, tc.wantMoves)
			}
			for k, v := range tc.wantMoves {
				if moves[k] != v {
					t.Errorf("%v: %d, want %d", k, moves[k], v)
				}
			}
		})
	}
}

// A real rebalance on the memory store: 3000 bindings on n1 and n2, n3
// added (1:1:1); it ends within 5%, having moved exactly the planned 950.
func TestRebalanceAfterScaleOut(t *testing.T) {
	cfg := config.Default()
	cfg.Backends = []config.Backend{{Name: "mqtt", Key: config.KeyClientID, Servers: []config.Server{
		{Name: "n1", Address: "10.0.0.1:1883", Weight: 1},
		{Name: "n2", Address: "10.0.0.2:1883", Weight: 1},
		{Name: "n3", Address: "10.0.0.3:1883", Weight: 1},
	}}}
	st := memory.New(memory.Options{})
	defer st.Close()
	a, err := New(&cfg, st, slog.New(slog.DiscardHandler), Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := range 3000 {
		b := store.Binding{Backend: "mqtt", ClientID: fmt.Sprintf("c%04d", i), Server: []string{"n1", "n2"}[i%2], TTL: time.Hour, Pinned: i < 10}
		if err := st.Put(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	// Half of the clients are connected: the 950 moves take unconnected
	// ones (1495 movable) and leave every connected client where it is.
	var touches []store.Touch
	for i := 10; i < 3000; i += 2 {
		touches = append(touches, store.Touch{ClientID: fmt.Sprintf("c%04d", i), TTL: time.Hour}, store.Touch{ClientID: fmt.Sprintf("c%04d", i+1), TTL: time.Hour})
		i += 2
	}
	if _, err := st.TouchConnected(ctx, "mqtt", touches, time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Rebalance(ctx, "mqtt", 100000, 1.5); err != ErrBadTolerance {
		t.Fatalf("tolerance 1.5: %v", err)
	}
	s, err := a.Rebalance(ctx, "mqtt", 100000, 0.05)
	if err != nil {
		t.Fatal(err)
	}
	if s.Planned != 950 {
		t.Fatalf("planned %d, want 950", s.Planned)
	}
	if _, err := a.Rebalance(ctx, "mqtt", 1000, 0.05); err != ErrRebalanceRunning && err != nil {
		t.Fatalf("second start: %v", err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for s.State == EvacuationRunning && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		s, _ = a.RebalanceStatus("mqtt")
	}
	if s.State != EvacuationDone || s.Moved != 950 || s.Failed != 0 {
		t.Fatalf("status %+v", s)
	}
	counts, err := st.CountByServer(ctx, "mqtt")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"n1", "n2", "n3"} {
		if counts[n] < 950 || counts[n] > 1050 {
			t.Errorf("%s holds %d, want 1000±5%%: %v", n, counts[n], counts)
		}
	}
	for i := range 10 {
		if b, _ := st.Get(ctx, "mqtt", fmt.Sprintf("c%04d", i)); b.Server != []string{"n1", "n2"}[i%2] {
			t.Errorf("pinned c%04d moved to %s", i, b.Server)
		}
	}
	for _, tc := range touches {
		i := 0
		fmt.Sscanf(tc.ClientID, "c%04d", &i)
		if b, _ := st.Get(ctx, "mqtt", tc.ClientID); b.Server != []string{"n1", "n2"}[i%2] {
			t.Errorf("connected %s moved to %s while unconnected clients could go", tc.ClientID, b.Server)
		}
	}
	a.StopRebalances()
}
