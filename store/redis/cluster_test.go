package redis

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/stickyd/stickyd/internal/testenv"
	"github.com/stickyd/stickyd/store"
	"github.com/stickyd/stickyd/store/storetest"
)

// One three-master cluster serves every subtest (each store has a prefix of
// its own and removes its keys); starting one takes a few seconds.
func TestCluster(t *testing.T) {
	t.Parallel() // mostly waits for processes to agree
	c := testenv.StartRedisCluster(t)
	nodes := make([]*goredis.Client, len(c.Addrs))
	for i, addr := range c.Addrs {
		nodes[i] = goredis.NewClient(&goredis.Options{Addr: addr, DisableIdentity: true})
		t.Cleanup(func() { _ = nodes[i].Close() })
	}

	t.Run("Spread", func(t *testing.T) { testClusterSpread(t, c, nodes) })
	t.Run("ListWalksAllMasters", func(t *testing.T) { testClusterList(t, c) })
	t.Run("ByServer", func(t *testing.T) { testClusterByServer(t, c) })
	t.Run("Contract", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T) store.Store { return newURLStore(t, c.URL) }, storetest.RealClock{})
	})
	// Last: it kills a master.
	t.Run("PingChecksEveryMaster", func(t *testing.T) { testClusterPing(t, c) })
}

// The buckets of many client ids land on all three masters, and the store
// reads every binding back.
func testClusterSpread(t *testing.T, c *testenv.RedisCluster, nodes []*goredis.Client) {
	ctx := context.Background()
	s := newURLStore(t, c.URL)
	const n = 3000
	buckets := map[string]bool{}
	for i := range n {
		id := fmt.Sprintf("client-%d", i)
		buckets[keyOf(t, s, "be", id)] = true
		if _, err := s.GetOrClaim(ctx, "be", id, "s1", time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	total, keys := 0, len(buckets)
	for i, node := range nodes {
		size, err := node.DBSize(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("master %s holds %d keys", c.Addrs[i], size)
		// A third each on average; a sixth is far below any plausible draw.
		if size < int64(keys/6) {
			t.Errorf("master %s holds %d of %d keys", c.Addrs[i], size, keys)
		}
		total += int(size)
	}
	if total != keys+1 {
		t.Errorf("masters hold %d keys in all, want %d buckets and the hash key", total, keys)
	}
	for i := range n {
		if b, err := s.Get(ctx, "be", fmt.Sprintf("client-%d", i)); err != nil || b.Server != "s1" {
			t.Fatalf("Get client-%d = %+v, %v", i, b, err)
		}
	}
}

// List pages through every master with small pages and loses nothing; the
// cursors name each master in turn. A pipeline over keys of all masters
// (fetch) reads them all: the cluster client splits it by node.
func testClusterList(t *testing.T, c *testenv.RedisCluster) {
	ctx := context.Background()
	s := newURLStore(t, c.URL)
	const n = 2500
	keys := make([]string, n)
	for i := range n {
		id := fmt.Sprintf("c%04d", i)
		keys[i] = keyOf(t, s, "be", id)
		if err := s.Put(ctx, store.Binding{Backend: "be", ClientID: id, Server: fmt.Sprintf("s%d", i%5), TTL: time.Hour}); err != nil {
			t.Fatal(err)
		}
	}

	now, err := s.redisNow(ctx)
	if err != nil {
		t.Fatal(err)
	}
	all, err := s.fetch(ctx, "be", keys, store.ListOptions{}, now, map[string]struct{}{})
	if err != nil || len(all) != n {
		t.Fatalf("fetch across masters: %d bindings, %v; want %d", len(all), err, n)
	}

	seen := map[string]int{}
	nodesSeen := map[int]bool{}
	opts := store.ListOptions{Limit: 7}
	for pages := 0; ; pages++ {
		if pages > 10*n {
			t.Fatal("List does not end")
		}
		p, err := s.List(ctx, "be", opts)
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Items) > opts.Limit {
			t.Fatalf("page of %d items, limit %d", len(p.Items), opts.Limit)
		}
		for _, b := range p.Items {
			seen[b.ClientID]++
		}
		if p.NextCursor == "" {
			break
		}
		cur, err := decodeCursor(p.NextCursor, 4*store.MaxListLimit)
		if err != nil || !cur.tagged {
			t.Fatalf("cursor %q = %+v, %v; want a tagged cursor", p.NextCursor, cur, err)
		}
		nodesSeen[cur.node] = true
		opts.Cursor = p.NextCursor
	}
	for i := range n {
		if seen[fmt.Sprintf("c%04d", i)] == 0 {
			t.Errorf("c%04d never listed", i)
		}
	}
	if len(seen) != n {
		t.Errorf("listed %d distinct ids, want %d", len(seen), n)
	}
	if len(nodesSeen) != 3 {
		t.Errorf("cursors named masters %v, want all three", nodesSeen)
	}

	// A cursor whose master is gone restarts the master at its index; an
	// index past the masters is a bad cursor.
	gone := encodeCursor(cursor{node: 1, tagged: true, tag: 12345, scan: 99})
	if _, err := s.List(ctx, "be", store.ListOptions{Cursor: gone}); err != nil {
		t.Errorf("List with a vanished master's cursor: %v", err)
	}
	past := encodeCursor(cursor{node: 3, tagged: true, tag: 12345})
	if _, err := s.List(ctx, "be", store.ListOptions{Cursor: past}); !errors.Is(err, store.ErrBadCursor) {
		t.Errorf("List with node index 3 of 3 = %v, want ErrBadCursor", err)
	}
	if _, err := s.List(ctx, "be", store.ListOptions{Cursor: base64.RawURLEncoding.EncodeToString([]byte{1, 2, 0})}); !errors.Is(err, store.ErrBadCursor) {
		t.Errorf("List with a truncated tagged cursor = %v, want ErrBadCursor", err)
	}
}

// CountByServer and DeleteByServer cover the bindings of every master.
func testClusterByServer(t *testing.T, c *testenv.RedisCluster) {
	ctx := context.Background()
	s := newURLStore(t, c.URL)
	for i := range 900 {
		if _, err := s.GetOrClaim(ctx, "be", fmt.Sprintf("c%d", i), fmt.Sprintf("s%d", i%3), time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	counts, err := s.CountByServer(ctx, "be")
	if err != nil {
		t.Fatal(err)
	}
	if len(counts) != 3 || counts["s0"] != 300 || counts["s1"] != 300 || counts["s2"] != 300 {
		t.Fatalf("counts = %v, want 300 each", counts)
	}
	n, err := s.DeleteByServer(ctx, "be", "s1")
	if err != nil || n != 300 {
		t.Fatalf("DeleteByServer = %d, %v; want 300", n, err)
	}
	counts, err = s.CountByServer(ctx, "be")
	if err != nil {
		t.Fatal(err)
	}
	if len(counts) != 2 || counts["s0"] != 300 || counts["s2"] != 300 {
		t.Fatalf("counts after delete = %v", counts)
	}
}

// Ping answers for the whole cluster: one master down makes it fail.
func testClusterPing(t *testing.T, c *testenv.RedisCluster) {
	ctx := context.Background()
	s := newURLStore(t, c.URL)
	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	c.Nodes[2].Kill()
	testenv.Eventually(t, 20*time.Second, func() error {
		if s.Ping(ctx) == nil {
			return fmt.Errorf("Ping succeeds with master %s down", c.Addrs[2])
		}
		return nil
	})
}
