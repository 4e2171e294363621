package redis

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stickyd/stickyd/internal/hashflood"
	"github.com/stickyd/stickyd/internal/testenv"
	"github.com/stickyd/stickyd/store"
)

// Ids crafted to share one bucket of the first (FNV-1a) layout spread over
// the keyed buckets: the flood that blocked Redis lands nowhere in
// particular. Under the old bucketOf all of them would be one bucket.
func TestCraftedIDsSpreadOverKeyedBuckets(t *testing.T) {
	ctx := context.Background()
	r := testenv.StartRedis(t)
	s := newTestStore(t, r)
	ids := hashflood.IDs("flood/", 3000)
	old := map[uint32]int{}
	for _, id := range ids {
		old[hashflood.FNVBucket(id)]++
	}
	if len(old) != 1 {
		t.Fatalf("crafted ids fall in %d FNV buckets, want 1", len(old))
	}
	for _, id := range ids {
		if c, err := s.GetOrClaim(ctx, "be", id, "s1", time.Hour); err != nil || !c.Claimed {
			t.Fatalf("claim %q = %+v, %v", id, c, err)
		}
	}
	largest, buckets := 0, map[string]bool{}
	for _, id := range ids {
		k := keyOf(t, s, "be", id)
		if buckets[k] {
			continue
		}
		buckets[k] = true
		n, err := s.rdb.HLen(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		largest = max(largest, int(n))
	}
	// 3000 ids in 65536 buckets: a bucket of 6 has odds below 1e-7.
	t.Logf("3000 crafted ids: %d buckets, the largest holds %d", len(buckets), largest)
	if largest > 5 || len(buckets) < 2800 {
		t.Fatalf("crafted ids: %d buckets, largest %d fields", len(buckets), largest)
	}
}

// Every Store on a Redis uses the key the first one made; Ping puts it
// back after a FLUSHALL, and adopts one another agent made meanwhile.
func TestHashKeyShared(t *testing.T) {
	ctx := context.Background()
	r := testenv.StartRedis(t)
	a, b := newStoreOpts(t, r, Options{}), newStoreOpts(t, r, Options{})
	if _, err := a.GetOrClaim(ctx, "be", "c1", "s1", time.Hour); err != nil {
		t.Fatal(err)
	}
	if c, err := b.GetOrClaim(ctx, "be", "c1", "s2", time.Hour); err != nil || c.Server != "s1" || c.Claimed {
		t.Fatalf("second store's claim = %+v, %v; want the first store's s1", c, err)
	}
	ka, kb := a.hk.Load(), b.hk.Load()
	if *ka != *kb {
		t.Fatalf("keys differ: %s, %s", ka, kb)
	}
	raw := rawClient(t, r)
	if err := raw.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if err := b.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if v, err := raw.Get(ctx, a.prefix+hashKeyName).Result(); err != nil || v != ka.String() {
		t.Fatalf("hash key after FLUSHALL and Ping = %q, %v; want %s back", v, err, ka)
	}
	const other = "0f0e0d0c0b0a09080706050403020100"
	raw.Set(ctx, a.prefix+hashKeyName, other, 0)
	if err := a.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if got := a.hk.Load().String(); got != other {
		t.Fatalf("key after Ping = %s, want the one in Redis", got)
	}
	raw.Set(ctx, a.prefix+hashKeyName, "garbage", 0)
	if err := a.Ping(ctx); err == nil || !strings.Contains(err.Error(), "not 32 hex digits") {
		t.Fatalf("Ping with a malformed key = %v", err)
	}
}

func newStoreOpts(t *testing.T, r *testenv.Redis, o Options) *Store {
	t.Helper()
	o.URL, o.OpTimeout = r.URL, 2*time.Second
	s, err := New(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// Past MaxBindings a new client is answered (its proposed server) but not
// stored; existing bindings keep working, and room freed shows at the next
// count.
func TestMaxBindings(t *testing.T) {
	ctx := context.Background()
	r := testenv.StartRedis(t)
	s := newStoreOpts(t, r, Options{MaxBindings: 50, CountInterval: 100 * time.Millisecond, CacheSize: 100})
	stored, notStored := 0, 0
	for i := range 200 {
		c, err := s.GetOrClaim(ctx, "be", fmt.Sprint("c", i), "s1", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case c.Claimed && !c.NotStored:
			stored++
		case c.NotStored && !c.Claimed && c.Server == "s1":
			notStored++
		default:
			t.Fatalf("claim %d = %+v", i, c)
		}
	}
	// A claim that lands while a count runs may count twice until the next
	// count: a few less than 50 may be stored, never more.
	if stored > 50 || stored < 45 || stored+notStored != 200 {
		t.Fatalf("stored %d, not stored %d; want 50 (or a few less) and the rest", stored, notStored)
	}
	if n, err := s.countFields(ctx, "be"); err != nil || n != int64(stored) {
		t.Fatalf("fields in Redis = %d, %v; want %d", n, err, stored)
	}
	if c, err := s.GetOrClaim(ctx, "be", "c7", "s2", time.Hour); err != nil || c.Server != "s1" || c.NotStored {
		t.Fatalf("existing binding past the cap = %+v, %v", c, err)
	}
	if _, err := s.Get(ctx, "be", "c100"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get of a client not stored = %v", err)
	}
	// Another backend has a cap of its own.
	if c, err := s.GetOrClaim(ctx, "other", "c1", "s1", time.Hour); err != nil || !c.Claimed {
		t.Fatalf("claim in another backend = %+v, %v", c, err)
	}
	for i := range 10 {
		if err := s.Delete(ctx, "be", fmt.Sprint("c", i)); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, 5*time.Second, func() error {
		c, err := s.GetOrClaim(ctx, "be", "late", "s1", time.Hour)
		if err != nil || !c.Claimed {
			return fmt.Errorf("claim after deletes = %+v, %v", c, err)
		}
		return nil
	})
}

// A bucket at maxBucketFields takes no new field, whatever MaxBindings;
// retime on a bucket too large for one HSCAN step keeps the bucket (no
// TTL) with every field.
func TestBucketFieldCap(t *testing.T) {
	ctx := context.Background()
	r := testenv.StartRedis(t)
	s := newTestStore(t, r)
	key := keyOf(t, s, "be", "victim")
	other := ""
	for i := 0; other == ""; i++ {
		if id := fmt.Sprint("other-", i); keyOf(t, s, "be", id) == key {
			other = id
		}
	}
	pipe := s.rdb.Pipeline()
	for i := range maxBucketFields - 1 {
		pipe.HSet(ctx, key, fmt.Sprint("filler-", i), "0|s9")
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, store.Binding{Backend: "be", ClientID: "victim", Server: "s2"}); err != nil {
		t.Fatal(err)
	}
	c, err := s.GetOrClaim(ctx, "be", other, "s1", time.Hour)
	if err != nil || !c.NotStored || c.Claimed || c.Server != "s1" {
		t.Fatalf("claim into a full bucket = %+v, %v", c, err)
	}
	if c, err := s.GetOrClaim(ctx, "be", "victim", "s1", time.Hour); err != nil || c.Server != "s2" || c.NotStored {
		t.Fatalf("existing field of a full bucket = %+v, %v", c, err)
	}
	if err := s.Delete(ctx, "be", "victim"); err != nil {
		t.Fatal(err)
	}
	if d, err := s.rdb.PTTL(ctx, key).Result(); err != nil || d != -1 {
		t.Fatalf("PTTL = %v, %v", d, err)
	}
	if n, err := s.rdb.HLen(ctx, key).Result(); err != nil || n != maxBucketFields-1 {
		t.Fatalf("HLEN = %d, %v", n, err)
	}
}

// With Redis at maxmemory (noeviction) a bound client keeps its server:
// the claim still reads its binding, only the TTL reset is refused. New
// bindings and admin writes fail with store.ErrReadOnly, Stats says
// read-only, and once Redis takes writes again Ping clears it.
func TestRedisFullIsReadOnly(t *testing.T) {
	for _, cache := range []int{0, 1000} {
		t.Run(fmt.Sprint("cache=", cache), func(t *testing.T) {
			ctx := context.Background()
			r := testenv.StartRedisArgs(t, "--maxmemory-policy", "noeviction")
			s := newStoreOpts(t, r, Options{CacheSize: cache})
			if c, err := s.GetOrClaim(ctx, "be", "bound", "s1", time.Hour); err != nil || !c.Claimed {
				t.Fatalf("claim = %+v, %v", c, err)
			}
			fill(t, r)
			for i := range 3 {
				c, err := s.GetOrClaim(ctx, "be", "bound", "s2", time.Hour)
				if err != nil || c.Server != "s1" {
					t.Fatalf("reconnect %d of a bound client at maxmemory = %+v, %v; want s1", i, c, err)
				}
			}
			if _, err := s.GetOrClaim(ctx, "be", "new", "s2", time.Hour); !errors.Is(err, store.ErrReadOnly) {
				t.Fatalf("new client at maxmemory: err %v, want ErrReadOnly", err)
			}
			if !s.Stats().ReadOnly {
				t.Fatal("Stats().ReadOnly false at maxmemory")
			}
			if err := s.Put(ctx, store.Binding{Backend: "be", ClientID: "p", Server: "s1"}); !errors.Is(err, store.ErrReadOnly) {
				t.Fatalf("Put at maxmemory = %v", err)
			}
			if err := s.Ping(ctx); err != nil {
				t.Fatalf("Ping at maxmemory = %v (reads work: not unhealthy)", err)
			}
			if b, err := s.Get(ctx, "be", "bound"); err != nil || b.Server != "s1" {
				t.Fatalf("Get at maxmemory = %+v, %v", b, err)
			}
			raw := rawClient(t, r)
			if err := raw.ConfigSet(ctx, "maxmemory", "0").Err(); err != nil {
				t.Fatal(err)
			}
			if err := s.Ping(ctx); err != nil || s.Stats().ReadOnly {
				t.Fatalf("after maxmemory lifted: Ping %v, read-only %v", err, s.Stats().ReadOnly)
			}
		})
	}
}

// fill writes some 4 MB to r, then sets its maxmemory to half of what it
// uses: with noeviction, every write that may grow memory is refused from
// then on (filling up to the first refusal leaves Redis at the edge, where
// a little freed memory lets the next write through).
func fill(t *testing.T, r *testenv.Redis) {
	t.Helper()
	ctx := context.Background()
	raw := rawClient(t, r)
	val := strings.Repeat("x", 1000)
	pipe := raw.Pipeline()
	for i := range 4000 {
		pipe.Set(ctx, fmt.Sprint("fill:", i), val, 0)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	used, err := raw.MemoryUsage(ctx, "fill:0").Result()
	if err != nil || used <= 0 {
		t.Fatalf("MEMORY USAGE = %d, %v", used, err)
	}
	info, err := raw.InfoMap(ctx, "memory").Result()
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	fmt.Sscan(info["Memory"]["used_memory"], &total)
	if total < 4_000_000 {
		t.Fatalf("used_memory %d after filling", total)
	}
	if err := raw.ConfigSet(ctx, "maxmemory", fmt.Sprint(total/2)).Err(); err != nil {
		t.Fatal(err)
	}
	if err := raw.Set(ctx, "probe", "x", 0).Err(); err == nil || !strings.HasPrefix(err.Error(), "OOM") {
		t.Fatalf("SET at maxmemory = %v, want OOM", err)
	}
}
