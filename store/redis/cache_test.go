package redis

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stickyd/stickyd/internal/testenv"
	"github.com/stickyd/stickyd/store"
)

// cachedStore is a Store on r with a local cache, sharing prefix with
// others made by the same test.
func cachedStore(t *testing.T, r *testenv.Redis, prefix string) *Store {
	t.Helper()
	s, err := New(context.Background(), Options{URL: r.URL, Prefix: prefix, OpTimeout: 2 * time.Second, CacheSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	waitFor(t, "the cache to subscribe", func() bool { return s.CacheStats().Enabled })
	return s
}

// waitFor polls cond for up to 10s: invalidations travel over pub/sub,
// asynchronously.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// cachedServer looks id up in the cache. An hour's TTL puts the refresh,
// which would also notice a change, 30s away: past every wait here.
func cachedServer(s *Store, id string) (string, bool) {
	c, ok := s.TryGetOrClaim("be", []byte(id), "proposed", time.Hour)
	return c.Server, ok
}

func TestCacheAnswersReconnects(t *testing.T) {
	ctx := context.Background()
	r := testenv.StartRedis(t)
	s := cachedStore(t, r, "c1:")
	if _, ok := cachedServer(s, "dev"); ok {
		t.Fatal("a client never seen was answered from the cache")
	}
	if _, err := s.GetOrClaim(ctx, "be", "dev", "s1", time.Minute); err != nil {
		t.Fatal(err)
	}
	if srv, ok := cachedServer(s, "dev"); !ok || srv != "s1" {
		t.Fatalf("cache = %q, %v; want s1 after the claim", srv, ok)
	}
	// Pinned bindings keep the TTL they were given: never cached.
	if err := s.Put(ctx, store.Binding{Backend: "be", ClientID: "pin", Server: "s2", Pinned: true, TTL: time.Minute}); err != nil {
		t.Fatal(err)
	}
	if c, err := s.GetOrClaim(ctx, "be", "pin", "s1", time.Minute); err != nil || c.Server != "s2" || !c.Pinned {
		t.Fatalf("claim of a pinned binding = %+v, %v", c, err)
	}
	if _, ok := cachedServer(s, "pin"); ok {
		t.Fatal("a pinned binding was cached")
	}
	if st := s.CacheStats(); st.Hits != 1 || st.Entries != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestCacheFollowsOtherAgents(t *testing.T) {
	// Agent A caches; agent B changes the binding through every path that
	// can; A must stop answering the old server.
	ctx := context.Background()
	r := testenv.StartRedis(t)
	a := cachedStore(t, r, "c2:")
	b := cachedStore(t, r, "c2:")
	for _, tc := range []struct {
		name   string
		change func(id string) error
		want   string // "" = A must miss
	}{
		{"move", func(id string) error { _, err := b.Move(ctx, "be", id, "s1", "s2", time.Hour); return err }, "s2"},
		{"put", func(id string) error {
			return b.Put(ctx, store.Binding{Backend: "be", ClientID: id, Server: "s3", TTL: time.Hour})
		}, "s3"},
		{"pin", func(id string) error {
			return b.Put(ctx, store.Binding{Backend: "be", ClientID: id, Server: "s1", Pinned: true})
		}, ""},
		{"delete", func(id string) error { return b.Delete(ctx, "be", id) }, ""},
		{"delete by server", func(id string) error { _, err := b.DeleteByServer(ctx, "be", "s1"); return err }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := "dev-" + tc.name
			if _, err := a.GetOrClaim(ctx, "be", id, "s1", time.Hour); err != nil {
				t.Fatal(err)
			}
			if srv, ok := cachedServer(a, id); !ok || srv != "s1" {
				t.Fatalf("A's cache = %q, %v", srv, ok)
			}
			if err := tc.change(id); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "A to drop the old binding", func() bool {
				srv, ok := cachedServer(a, id)
				return !ok || srv != "s1"
			})
			// The next connect asks Redis and sees B's change.
			c, err := a.GetOrClaim(ctx, "be", id, "s9", time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			want := tc.want
			if want == "" && tc.name == "pin" {
				want = "s1"
			} else if want == "" {
				want = "s9" // gone: claimed anew
			}
			if c.Server != want {
				t.Fatalf("after B's %s, A's claim = %+v, want %s", tc.name, c, want)
			}
		})
	}
}

func TestCacheRefreshKeepsTheBindingAlive(t *testing.T) {
	ctx := context.Background()
	r := testenv.StartRedis(t)
	s := cachedStore(t, r, "c3:")
	raw := rawClient(t, r)
	const ttl = 1600 * time.Millisecond // refreshed every 100ms
	if _, err := s.GetOrClaim(ctx, "be", "dev", "s1", ttl); err != nil {
		t.Fatal(err)
	}
	// Reconnects answered from the cache, for twice the TTL: the refreshes
	// must keep the binding in Redis.
	for end := time.Now().Add(2 * ttl); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		c, ok := s.TryGetOrClaim("be", []byte("dev"), "s2", ttl)
		if !ok {
			c, _ = s.GetOrClaim(ctx, "be", "dev", "s2", ttl)
		}
		if c.Server != "s1" {
			t.Fatalf("binding changed to %+v", c)
		}
	}
	v, err := raw.HGet(ctx, keyOf(t, s, "be", "dev"), "dev").Result()
	exp, _, _ := decodeValue(v)
	d := time.Duration(exp-time.Now().UnixMilli()) * time.Millisecond
	if err != nil || d < ttl-2*refreshEvery(ttl)-200*time.Millisecond {
		t.Fatalf("PTTL after %v of cached reconnects = %v, %v; want about %v", 2*ttl, d, err, ttl)
	}
	if st := s.CacheStats(); st.Refreshes == 0 || st.Hits == 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestCacheRefreshNeverRecreates(t *testing.T) {
	// A binding removed behind the cache's back (no invalidation: a FLUSHDB,
	// a write lost in a failover) is not brought back by a refresh, and the
	// entry is dropped.
	ctx := context.Background()
	r := testenv.StartRedis(t)
	s := cachedStore(t, r, "c4:")
	raw := rawClient(t, r)
	const ttl = 1600 * time.Millisecond
	if _, err := s.GetOrClaim(ctx, "be", "dev", "s1", ttl); err != nil {
		t.Fatal(err)
	}
	raw.HDel(ctx, keyOf(t, s, "be", "dev"), "dev")
	waitFor(t, "the entry to go", func() bool {
		_, ok := cachedServer(s, "dev")
		return !ok
	})
	if ok, err := raw.HExists(ctx, keyOf(t, s, "be", "dev"), "dev").Result(); err != nil || ok {
		t.Fatalf("the refresh re-created the binding: %v, %v", ok, err)
	}
}

func TestCacheEmptiesWhenTheSubscriptionDrops(t *testing.T) {
	ctx := context.Background()
	r := testenv.StartRedis(t)
	s := cachedStore(t, r, "c5:")
	raw := rawClient(t, r)
	if _, err := s.GetOrClaim(ctx, "be", "dev", "s1", time.Minute); err != nil {
		t.Fatal(err)
	}
	resets := s.CacheStats().Resets
	// Changes made while the subscription is down would go unseen: the
	// cache must start empty once it is back.
	if err := raw.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the cache to reset and resubscribe", func() bool {
		st := s.CacheStats()
		return st.Resets >= resets+2 && st.Enabled
	})
	if _, ok := cachedServer(s, "dev"); ok {
		t.Fatal("an entry survived the loss of the subscription")
	}
	if _, err := s.GetOrClaim(ctx, "be", "dev", "s2", time.Minute); err != nil {
		t.Fatal(err)
	}
	if srv, ok := cachedServer(s, "dev"); !ok || srv != "s1" {
		t.Fatalf("cache after resubscribing = %q, %v", srv, ok)
	}
}

func TestCacheIsBounded(t *testing.T) {
	ctx := context.Background()
	r := testenv.StartRedis(t)
	s, err := New(ctx, Options{URL: r.URL, Prefix: "c6:", CacheSize: 128, OpTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	waitFor(t, "the cache to subscribe", func() bool { return s.CacheStats().Enabled })
	for i := range 1000 {
		if _, err := s.GetOrClaim(ctx, "be", fmt.Sprint("dev-", i), "s1", time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.CacheStats().Entries; n > 128 || n == 0 {
		t.Fatalf("%d entries, want at most 128", n)
	}
}

func TestCacheFillAfterInvalidationIsRefused(t *testing.T) {
	// The race the generations close: a lookup reads Redis, another agent
	// changes the binding and its invalidation arrives, then the stale
	// answer comes back. No Redis needed.
	c := newCache(100, "p:")
	c.setEnabled(true)
	tk := c.take("be", "dev")
	c.invalidate("be:dev")
	c.fill(tk, "dev", store.Claim{Server: "stale"}, time.Minute)
	if _, ok := c.lookup("be", []byte("dev"), time.Minute); ok {
		t.Fatal("a fill that raced an invalidation was kept")
	}
	tk = c.take("be", "dev")
	c.setEnabled(false) // subscription lost
	c.setEnabled(true)  // and back
	c.fill(tk, "dev", store.Claim{Server: "stale"}, time.Minute)
	if _, ok := c.lookup("be", []byte("dev"), time.Minute); ok {
		t.Fatal("a fill from before a reset was kept")
	}
	tk = c.take("be", "dev")
	c.fill(tk, "dev", store.Claim{Server: "s1"}, time.Minute)
	if cl, ok := c.lookup("be", []byte("dev"), time.Minute); !ok || cl.Server != "s1" {
		t.Fatalf("lookup = %+v, %v", cl, ok)
	}
	// Invalidations name keys; a malformed one changes nothing.
	c.invalidate("nocolon")
	c.invalidate("other:dev")
	if _, ok := c.lookup("be", []byte("dev"), time.Minute); !ok {
		t.Fatal("a foreign invalidation dropped the entry")
	}
	c.invalidate("be:dev")
	if _, ok := c.lookup("be", []byte("dev"), time.Minute); ok {
		t.Fatal("the invalidation was ignored")
	}
}

func TestCacheEntriesAgeOut(t *testing.T) {
	c := newCache(100, "p:")
	now := time.Unix(1000, 0)
	c.now = func() time.Time { return now }
	c.setEnabled(true)
	c.fill(c.take("be", "dev"), "dev", store.Claim{Server: "s1"}, 1600*time.Millisecond)
	now = now.Add(150 * time.Millisecond) // past refreshEvery (100ms): a refresh is queued
	if _, ok := c.lookup("be", []byte("dev"), 1600*time.Millisecond); !ok {
		t.Fatal("miss before the entry aged out")
	}
	if len(c.refreshes) != 1 {
		t.Fatalf("%d refreshes queued, want 1", len(c.refreshes))
	}
	if _, ok := c.lookup("be", []byte("dev"), 1600*time.Millisecond); !ok || len(c.refreshes) != 1 {
		t.Fatalf("second hit: ok=%v, %d refreshes queued (want one in flight)", ok, len(c.refreshes))
	}
	now = now.Add(100 * time.Millisecond) // 250ms unconfirmed > 2 x 100ms
	if _, ok := c.lookup("be", []byte("dev"), 1600*time.Millisecond); ok {
		t.Fatal("an entry unconfirmed for twice refreshEvery still answered")
	}
}

// The cache is bounded in bytes, not only entries: ids past CacheMaxIDLen
// are not held, and a full cache of the longest ids it holds stays near
// the 23 MiB the configuration promises for 100000 entries. (Before, 100000
// entries of 16 KB ids were 1.6 GB.)
func TestCacheBoundedInBytes(t *testing.T) {
	const size = 100000
	c := newCache(size, "p:")
	c.enabled.Store(true)
	claim := store.Claim{Server: "node-1"}
	long := strings.Repeat("x", 16<<10)
	for i := range 1000 {
		id := fmt.Sprintf("%06d", i) + long
		c.fill(c.take("be", id), id, claim, time.Hour)
	}
	if n := c.stats().Entries; n != 0 {
		t.Fatalf("%d entries of 16 KB ids cached, want 0", n)
	}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	pad := strings.Repeat("y", CacheMaxIDLen-8)
	for i := range 2 * size {
		id := fmt.Sprintf("%08d", i) + pad
		c.fill(c.take("be", id), id, claim, time.Hour)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	st := c.stats()
	grown := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("%d entries of %d-byte ids: heap grew %.1f MiB (%d bytes an entry)", st.Entries, CacheMaxIDLen, float64(grown)/(1<<20), grown/int64(st.Entries))
	if st.Entries > size || st.Entries < size*9/10 {
		t.Fatalf("%d entries, want about %d", st.Entries, size)
	}
	if grown > 25<<20 {
		t.Fatalf("a full cache takes %d bytes, want under 25 MiB", grown)
	}
	runtime.KeepAlive(c)
}

// A change this store makes is seen by its own next lookup at once, not
// when its invalidation comes back over pub/sub (a pin through this
// agent's API, then the client's next connect through this agent).
func TestOwnChangesReachTheCacheAtOnce(t *testing.T) {
	ctx := context.Background()
	r := testenv.StartRedis(t)
	s := cachedStore(t, r, "own:")
	servers := []string{"s1", "s2"}
	for i := range 200 {
		id := fmt.Sprintf("dev-%d", i%10)
		if _, err := s.GetOrClaim(ctx, "be", id, servers[0], time.Hour); err != nil {
			t.Fatal(err)
		}
		cachedServer(s, id) // warm
		want := servers[i%2]
		switch i % 3 {
		case 0:
			if err := s.Put(ctx, store.Binding{Backend: "be", ClientID: id, Server: want, TTL: time.Hour}); err != nil {
				t.Fatal(err)
			}
		case 1:
			c, err := s.GetOrClaim(ctx, "be", id, servers[0], time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Move(ctx, "be", id, c.Server, want, time.Hour); err != nil {
				t.Fatal(err)
			}
		case 2:
			if err := s.Delete(ctx, "be", id); err != nil {
				t.Fatal(err)
			}
			want = "proposed" // gone: the lookup claims anew
		}
		if srv, ok := cachedServer(s, id); ok && srv != want {
			t.Fatalf("round %d: the cache answered %s right after this store changed %s to %s", i, srv, id, want)
		}
	}
}
