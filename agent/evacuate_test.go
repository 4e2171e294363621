package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/stickyd/stickyd/store"
	"github.com/stickyd/stickyd/store/memory"
)

func TestEvacuate(t *testing.T) {
	ctx := context.Background()
	st := memory.New(memory.Options{})
	t.Cleanup(func() { st.Close() })
	a, err := New(testConfig(1, 1, 1), st, slog.New(slog.NewTextHandler(io.Discard, nil)), Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 30; i++ {
		_ = st.Put(ctx, store.Binding{Backend: "mqtt", ClientID: fmt.Sprintf("c%02d", i), Server: "n1", TTL: time.Hour})
	}
	_ = st.Put(ctx, store.Binding{Backend: "mqtt", ClientID: "pinned", Server: "n1", Pinned: true})
	_ = st.Put(ctx, store.Binding{Backend: "mqtt", ClientID: "other", Server: "n2"})

	if _, err := a.Evacuate(ctx, "mqtt", "n1", 0); !errors.Is(err, ErrBadRate) {
		t.Fatalf("rate 0: %v", err)
	}
	if _, err := a.Evacuate(ctx, "mqtt", "n9", 10); !errors.Is(err, ErrUnknownServer) {
		t.Fatalf("unknown server: %v", err)
	}
	if _, err := a.Evacuate(ctx, "nope", "n1", 10); !errors.Is(err, ErrUnknownBackend) {
		t.Fatalf("unknown backend: %v", err)
	}
	if _, err := a.Evacuate(ctx, "mqtt", "n1", 1000); err != nil {
		t.Fatal(err)
	}
	if !a.Backend("mqtt").States()[0].Draining {
		t.Fatal("evacuated server not draining")
	}
	deadline := time.Now().Add(10 * time.Second)
	var s EvacuationStatus
	for {
		s, _ = a.EvacuationStatus("mqtt", "n1")
		if s.State != EvacuationRunning || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if s.State != EvacuationDone || s.Moved != 30 || s.Skipped != 1 || s.Failed != 0 {
		t.Fatalf("%+v", s)
	}
	counts, _ := st.CountByServer(ctx, "mqtt")
	if counts["n1"] != 1 || counts["n2"]+counts["n3"] != 31 || counts["n2"] < 2 || counts["n3"] < 1 {
		t.Fatalf("counts after evacuation: %v", counts)
	}
	if b, _ := st.Get(ctx, "mqtt", "c00"); b.TTL <= 50*time.Minute {
		t.Fatalf("moved binding lost its TTL: %+v", b)
	}
}

func TestEvacuationCancel(t *testing.T) {
	ctx := context.Background()
	st := memory.New(memory.Options{})
	t.Cleanup(func() { st.Close() })
	a, _ := New(testConfig(1, 1), st, slog.New(slog.NewTextHandler(io.Discard, nil)), Options{})
	for i := 0; i < 50; i++ {
		_ = st.Put(ctx, store.Binding{Backend: "mqtt", ClientID: fmt.Sprintf("c%02d", i), Server: "n1"})
	}
	if _, err := a.Evacuate(ctx, "mqtt", "n1", 5); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Evacuate(ctx, "mqtt", "n1", 5); !errors.Is(err, ErrEvacuationRunning) {
		t.Fatalf("second start: %v", err)
	}
	s, ok := a.CancelEvacuation("mqtt", "n1")
	if !ok || s.State != EvacuationCancelled || s.Moved >= 50 {
		t.Fatalf("%+v", s)
	}
}
