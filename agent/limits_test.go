package agent

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"

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
				want := b.Servers[b.rendezvous(hashKey([]byte(id)), func(int) bool { return true })].Name
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
