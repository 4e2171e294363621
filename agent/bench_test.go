package agent

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"testing"

	"github.com/stickyd/stickyd/store/memory"
)

// Hot-path decisions on the embedded memory store, as `stickyd serve` runs
// them without redis_url. Compare runs with benchstat; never assert timing.

func newMemoryAgent(b *testing.B) *Agent {
	b.Helper()
	st := memory.New(memory.Options{})
	b.Cleanup(func() { _ = st.Close() })
	a, err := New(testConfig(1, 1), st, slog.New(slog.NewTextHandler(io.Discard, nil)), Options{})
	if err != nil {
		b.Fatal(err)
	}
	return a
}

// clientID writes a realistic 24-byte client id for n into buf.
func clientID(buf []byte, n int) []byte {
	buf = append(buf[:0], "bench-device-"...)
	return strconv.AppendInt(buf, 1e10+int64(n), 10)
}

// BenchmarkDecideMemory measures one decision: "warm" on a client bound
// before (the reconnect of a storm: lookup and TTL refresh), through Decide
// and through TryDecide ("warm-inline", as the SPOE adapter calls it first:
// no store budget context, the id looked up as bytes); "new" on a client
// never seen (rendezvous placement and claim).
func BenchmarkDecideMemory(b *testing.B) {
	ctx := context.Background()
	warm := func(b *testing.B, decide func(a *Agent, q *Query) (Decision, bool)) {
		a := newMemoryAgent(b)
		const pool = 10000
		q := query("", true, true)
		for i := range pool {
			q.ClientID = clientID(q.ClientID, i)
			if d := a.Decide(ctx, q); d.Outcome != OutcomePlaced {
				b.Fatalf("warm-up: %+v", d)
			}
		}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			q.ClientID = clientID(q.ClientID, i%pool)
			if d, ok := decide(a, q); !ok || d.Outcome != OutcomeExisting {
				b.Fatalf("%+v %v", d, ok)
			}
			i += 7919 // stride over the pool, not one hot entry
		}
	}
	b.Run("warm", func(b *testing.B) {
		warm(b, func(a *Agent, q *Query) (Decision, bool) { return a.Decide(ctx, q), true })
	})
	b.Run("warm-inline", func(b *testing.B) {
		warm(b, func(a *Agent, q *Query) (Decision, bool) { return a.TryDecide(q) })
	})
	b.Run("new", func(b *testing.B) {
		a := newMemoryAgent(b)
		q := query("", true, true)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			q.ClientID = clientID(q.ClientID, i)
			if d := a.Decide(ctx, q); d.Outcome != OutcomePlaced {
				b.Fatalf("%+v", d)
			}
			i++
		}
	})
}
