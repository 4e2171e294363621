package agent

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/stickyd/stickyd/store"
	"github.com/stickyd/stickyd/store/memory"
)

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Past the store's max_bindings a new client is routed by the rendezvous
// hash (fail open) and counted as not_stored, on the inline path and the
// store path alike; bound clients keep their server; one warning says so.
func TestNewClientsPastMaxBindings(t *testing.T) {
	for _, inline := range []bool{true, false} {
		t.Run(fmt.Sprint("inline=", inline), func(t *testing.T) {
			var logs syncBuffer
			st := memory.New(memory.Options{MaxBindings: 3})
			t.Cleanup(func() { _ = st.Close() })
			a, err := New(testConfig(1, 1), st, slog.New(slog.NewTextHandler(&logs, nil)), Options{})
			if err != nil {
				t.Fatal(err)
			}
			decide := func(id string) Decision {
				q := query(id, true, true)
				if inline {
					d, ok := a.TryDecide(q)
					if !ok {
						t.Fatal("the memory store did not answer inline")
					}
					return d
				}
				return a.Decide(context.Background(), q)
			}
			b := a.Backend("mqtt")
			for i := range 10 {
				id := fmt.Sprint("c", i)
				d := decide(id)
				want := b.Servers[b.rendezvous([]byte(id), func(int) bool { return true })].Name
				if d.Server != want {
					t.Fatalf("%s went to %s, want the rendezvous choice %s", id, d.Server, want)
				}
				if wantOutcome := map[bool]Outcome{true: OutcomePlaced, false: OutcomeNotStored}[i < 3]; d.Outcome != wantOutcome {
					t.Fatalf("%s: outcome %v, want %v", id, d.Outcome, wantOutcome)
				}
			}
			if d := decide("c1"); d.Outcome != OutcomeExisting {
				t.Fatalf("bound client past the cap: %+v", d)
			}
			st2 := a.Stats()
			if st2.Outcomes["not_stored"] != 7 || st2.Outcomes["placed"] != 3 {
				t.Fatalf("outcomes %v", st2.Outcomes)
			}
			if n := strings.Count(logs.String(), "max_bindings"); n != 1 {
				t.Fatalf("%d warnings in %q, want one (rate-limited)", n, logs.String())
			}
		})
	}
}

// A store that refuses writes (read-only) answered: its errors do not open
// the breaker, so bound clients are still read after many new ones failed.
func TestReadOnlyErrorsKeepTheBreakerClosed(t *testing.T) {
	f := newFake()
	a := newAgent(t, f, 1, 1)
	ctx := context.Background()
	if err := f.Put(ctx, store.Binding{Backend: "mqtt", ClientID: "bound", Server: "n2"}); err != nil {
		t.Fatal(err)
	}
	f.err = fmt.Errorf("redis get-or-claim: %w: OOM", store.ErrReadOnly)
	for i := range 20 {
		if d := a.Decide(ctx, query(fmt.Sprint("new-", i), true, true)); d.Outcome != OutcomeFallback {
			t.Fatalf("new client with the store read-only: %+v", d)
		}
	}
	if st := a.BreakerState(); st != "closed" {
		t.Fatalf("breaker %s after read-only errors, want closed", st)
	}
	f.err = nil
	if d := a.Decide(ctx, query("bound", true, true)); d.Server != "n2" || d.Outcome != OutcomeExisting {
		t.Fatalf("bound client after read-only errors: %+v", d)
	}
}
