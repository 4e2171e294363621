package agent

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/stickyd/stickyd/store"
)

// inlineFake answers the connect path inline (as the memory store does),
// except when its error is set (as a Redis cache that misses) or, with
// noInlineMove, for moves (as the Redis store, whose moves need a round
// trip).
type inlineFake struct {
	*fakeStore
	noInlineMove bool
	tries        int
}

// Inline declares the inline path, which the embedded fakeStore lacks.
func (f *inlineFake) Inline() store.Inline { return f }

func (f *inlineFake) TryGetOrClaim(be string, id []byte, proposed string, ttl time.Duration) (store.Claim, bool) {
	f.tries++
	c, err := f.fakeStore.GetOrClaim(context.Background(), be, string(id), proposed, ttl)
	return c, err == nil
}

func (f *inlineFake) TryMove(be string, id []byte, from, to string, ttl time.Duration) (store.Claim, bool) {
	if f.noInlineMove {
		return store.Claim{}, false
	}
	c, err := f.fakeStore.Move(context.Background(), be, string(id), from, to, ttl)
	return c, err == nil
}

func TestTryDecide(t *testing.T) {
	ctx := context.Background()
	t.Run("a store without inline answers never answers inline", func(t *testing.T) {
		a := newAgent(t, newFake(), 1, 1)
		if d, ok := a.TryDecide(query("c1", true, true)); ok {
			t.Fatalf("answered inline: %+v", d)
		}
		if n := a.Stats().Outcomes["placed"]; n != 0 {
			t.Fatalf("counted %d placements", n)
		}
	})
	t.Run("a move the store cannot make inline is left to Decide, uncounted", func(t *testing.T) {
		st := &inlineFake{fakeStore: newFake(), noInlineMove: true}
		a := newAgent(t, st, 1, 1)
		_ = st.Put(ctx, store.Binding{Backend: "mqtt", ClientID: "c1", Server: "n1"})
		if d, ok := a.TryDecide(query("c1", false, true)); ok {
			t.Fatalf("answered inline: %+v", d)
		}
		if s := a.Stats(); s.Outcomes["moved"]+s.Outcomes["existing"] != 0 {
			t.Fatalf("counted: %+v", s.Outcomes)
		}
		if d := a.Decide(ctx, query("c1", false, true)); d.Outcome != OutcomeMoved || d.Server != "n2" {
			t.Fatalf("%+v", d)
		}
	})
	t.Run("an open breaker answers inline without the store; half open leaves the probe to Decide", func(t *testing.T) {
		st := &inlineFake{fakeStore: newFake()}
		st.err = errors.New("down")
		a, err := New(testConfig(1, 1), st, discard(), Options{BreakerFailures: 1, BreakerCooldown: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if d := a.Decide(ctx, query("c1", true, true)); d.Outcome != OutcomeFallback {
			t.Fatalf("%+v", d)
		}
		tries := st.tries
		d, ok := a.TryDecide(query("c2", true, true))
		if !ok || d.Outcome != OutcomeFallback || d.Server != a.Backend("mqtt").Place([]byte("c2")) || st.tries != tries {
			t.Fatalf("open breaker: %+v ok=%v, store tried %d times", d, ok, st.tries-tries)
		}
		time.Sleep(60 * time.Millisecond)
		if d, ok := a.TryDecide(query("c3", true, true)); ok {
			t.Fatalf("half open answered inline: %+v", d)
		}
		st.err = nil
		if d := a.Decide(ctx, query("c3", true, true)); d.Outcome != OutcomePlaced || a.BreakerState() != "closed" {
			t.Fatalf("probe: %+v, breaker %s", d, a.BreakerState())
		}
	})
	t.Run("inline decisions are observed", func(t *testing.T) {
		var seen []Outcome
		a, err := New(testConfig(1, 1), &inlineFake{fakeStore: newFake()}, discard(),
			Options{ObserveDecision: func(o Outcome, _ time.Duration) { seen = append(seen, o) }})
		if err != nil {
			t.Fatal(err)
		}
		a.TryDecide(query("c1", true, true))
		a.TryDecide(query("c1", true, true))
		if len(seen) != 2 || seen[0] != OutcomePlaced || seen[1] != OutcomeExisting {
			t.Fatalf("observed %v", seen)
		}
	})
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
