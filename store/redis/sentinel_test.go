package redis

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stickyd/stickyd/internal/testenv"
	"github.com/stickyd/stickyd/store"
	"github.com/stickyd/stickyd/store/storetest"
)

func TestSentinelContract(t *testing.T) {
	t.Parallel() // mostly waits for processes to agree
	rs := testenv.StartRedisSentinel(t)
	storetest.Run(t, func(t *testing.T) store.Store { return newURLStore(t, rs.URL) }, storetest.RealClock{})
}

// After the master dies and the sentinels promote the replica, the same
// Store reaches the new master by itself: bindings written (and replicated)
// before the failover are there, and new writes succeed. Calls fail while
// the failover runs, which the agent rides out by failing open.
func TestSentinelFailover(t *testing.T) {
	t.Parallel() // mostly waits for processes to agree
	ctx := context.Background()
	rs := testenv.StartRedisSentinel(t)
	s := newURLStore(t, rs.URL)

	const n = 200
	id := func(i int) string { return fmt.Sprintf("client-%d", i) }
	for i := range n {
		if _, err := s.GetOrClaim(ctx, "be", id(i), fmt.Sprintf("s%d", i%3), time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Put(ctx, store.Binding{Backend: "be", ClientID: "pinned", Server: "s9", Pinned: true}); err != nil {
		t.Fatal(err)
	}
	// WAIT returns once the replica has acknowledged every write so far:
	// what the failover must keep.
	if acked, err := s.rdb.Do(ctx, "WAIT", 1, 10000).Int(); err != nil || acked != 1 {
		t.Fatalf("WAIT 1 = %d, %v; want 1 replica", acked, err)
	}

	rs.Failover(t)

	testenv.Eventually(t, 30*time.Second, func() error {
		_, err := s.Get(ctx, "be", id(0))
		return err
	})
	for i := range n {
		b, err := s.Get(ctx, "be", id(i))
		if err != nil || b.Server != fmt.Sprintf("s%d", i%3) || b.TTL <= 0 {
			t.Fatalf("after failover, Get %s = %+v, %v", id(i), b, err)
		}
	}
	if b, err := s.Get(ctx, "be", "pinned"); err != nil || b.Server != "s9" || !b.Pinned {
		t.Fatalf("after failover, pinned binding = %+v, %v", b, err)
	}
	// Writes go to the new master (the old one is dead, so they could not
	// succeed anywhere else).
	testenv.Eventually(t, 30*time.Second, func() error {
		_, err := s.GetOrClaim(ctx, "be", "new-client", "s1", time.Hour)
		return err
	})
	c, err := s.GetOrClaim(ctx, "be", "another-client", "s2", time.Hour)
	if err != nil || !c.Claimed || c.Server != "s2" {
		t.Fatalf("claim after failover = %+v, %v", c, err)
	}
	if c, err := s.GetOrClaim(ctx, "be", id(1), "s0", time.Hour); err != nil || c.Claimed || c.Server != "s1" {
		t.Fatalf("existing binding after failover = %+v, %v", c, err)
	}
	wantS1 := 1 // new-client
	for i := range n {
		if i%3 == 1 {
			wantS1++
		}
	}
	counts, err := s.CountByServer(ctx, "be")
	if err != nil || counts["s1"] != wantS1 {
		t.Fatalf("CountByServer after failover = %v, %v", counts, err)
	}
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping after failover: %v", err)
	}
	if role, err := testenv.RedisDo(rs.ReplicaAddr, "ROLE"); err != nil || fmt.Sprint(role.([]any)[0]) != "master" {
		t.Fatalf("ROLE of the promoted replica = %v, %v", role, err)
	}
}
