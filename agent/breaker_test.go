package agent

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stickyd/stickyd/store"
)

func TestBreaker(t *testing.T) {
	b := breaker{threshold: 3, cooldown: 50 * time.Millisecond}
	for i := 0; i < 2; i++ {
		if !b.allow() || b.failure() {
			t.Fatalf("opened after %d failures", i+1)
		}
	}
	if !b.allow() || !b.failure() || b.state() != breakerOpen {
		t.Fatal("third failure should open it")
	}
	if b.allow() {
		t.Fatal("open breaker allowed a call")
	}
	time.Sleep(60 * time.Millisecond)
	if b.state() != breakerHalfOpen || !b.allow() {
		t.Fatal("cooldown over: one probe must pass")
	}
	if b.allow() {
		t.Fatal("only one probe at a time")
	}
	if b.failure(); b.state() != breakerOpen {
		t.Fatal("failed probe must reopen")
	}
	time.Sleep(60 * time.Millisecond)
	if !b.allow() || !b.success() || b.state() != breakerClosed || !b.allow() {
		t.Fatal("successful probe must close")
	}
}

// countingStore fails every call and counts them.
type countingStore struct {
	*fakeStore
	calls int
}

func (c *countingStore) GetOrClaim(ctx context.Context, be, id, p string, ttl time.Duration) (store.Claim, error) {
	c.calls++
	return store.Claim{}, errors.New("redis down")
}

func TestBreakerSkipsTheStoreDuringAnOutage(t *testing.T) {
	st := &countingStore{fakeStore: newFake()}
	a := newAgent(t, st, 1, 1)
	ctx := context.Background()
	for i := 0; i < 100; i++ {
		d := a.Decide(ctx, query("c1", true, true))
		if d.Outcome != OutcomeFallback || d.Server != a.Backend("mqtt").Place([]byte("c1")) {
			t.Fatalf("%+v", d)
		}
	}
	if st.calls != 5 || a.BreakerState() != "open" || a.Stats().BreakerSkips != 95 {
		t.Fatalf("store called %d times, breaker %s, skips %d", st.calls, a.BreakerState(), a.Stats().BreakerSkips)
	}
}
