package redis

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/stickyd/stickyd/internal/testenv"
	"github.com/stickyd/stickyd/store"
	"github.com/stickyd/stickyd/store/storetest"
)

var prefixSeq atomic.Int64

// newTestStore returns a Store on r with a prefix of its own, holding glob
// metacharacters so that every SCAN MATCH must escape it. Its keys are
// removed when the test ends.
func newTestStore(t testing.TB, r *testenv.Redis) *Store {
	t.Helper()
	return newURLStore(t, r.URL)
}

// newURLStore is newTestStore on any URL (sentinel, cluster).
func newURLStore(t testing.TB, url string) *Store {
	t.Helper()
	prefix := fmt.Sprintf("t%d[*?]\\:", prefixSeq.Add(1))
	// The contract is about semantics, not latency: a generous budget keeps
	// cold-pool bursts under -race on a busy machine from timing out.
	s, err := New(context.Background(), Options{URL: url, Prefix: prefix, OpTimeout: 2 * time.Second, CacheSize: 1000})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { cleanup(s, prefix) })
	return s
}

// cleanup removes the keys under prefix and closes s. One UNLINK per key:
// on Redis Cluster a multi-key UNLINK must stay within one slot.
func cleanup(s *Store, prefix string) {
	ctx := context.Background()
	_ = s.scanAll(ctx, globEscape(prefix)+"*", func(keys []string) error {
		pipe := s.rdb.Pipeline()
		for _, k := range keys {
			pipe.Unlink(ctx, k)
		}
		_, err := pipe.Exec(ctx)
		return err
	})
	_ = s.Close()
}

func TestContract(t *testing.T) {
	r := testenv.StartRedis(t)
	storetest.Run(t, func(t *testing.T) store.Store { return newTestStore(t, r) }, storetest.RealClock{})
}

func rawClient(t testing.TB, r *testenv.Redis) *goredis.Client {
	c := goredis.NewClient(&goredis.Options{Addr: r.Addr, DisableIdentity: true})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestKeyLayout(t *testing.T) {
	ctx := context.Background()
	r := testenv.StartRedis(t)
	s, err := New(ctx, Options{URL: r.URL})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	raw := rawClient(t, r)

	// The bucket is SipHash-2-4 of the id under the key in stickyd:hashkey,
	// low 16 bits, in hex: fixed values for a fixed key.
	if err := raw.Set(ctx, "stickyd:hashkey", "000102030405060708090a0b0c0d0e0f", 0).Err(); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]string{"c/1 x": "7e62", "p": "7fe4", "": "0e31"} {
		if k := keyOf(t, s, "be", id); k != "stickyd:b:be:"+want {
			t.Errorf("bucket of %q = %q, want stickyd:b:be:%s", id, k, want)
		}
	}
	before := time.Now().UnixMilli()
	if _, err := s.GetOrClaim(ctx, "be", "c/1 x", "s1", time.Minute); err != nil {
		t.Fatal(err)
	}
	v, err := raw.HGet(ctx, "stickyd:b:be:7e62", "c/1 x").Result()
	exp, server, pinned := decodeValue(v)
	if err != nil || server != "s1" || pinned || exp < before+time.Minute.Milliseconds()-1000 || exp > time.Now().UnixMilli()+time.Minute.Milliseconds()+1000 {
		t.Fatalf("raw value = %q, %v; want <now+60000>|s1", v, err)
	}
	if d, err := raw.PTTL(ctx, "stickyd:b:be:7e62").Result(); err != nil || d <= 0 || d > time.Minute {
		t.Fatalf("bucket PTTL = %v, %v; want up to the field's minute", d, err)
	}
	if err := s.Put(ctx, store.Binding{Backend: "be", ClientID: "p", Server: "s2", Pinned: true}); err != nil {
		t.Fatal(err)
	}
	if v, err := raw.HGet(ctx, "stickyd:b:be:7fe4", "p").Result(); err != nil || v != "0|!s2" {
		t.Fatalf("raw pinned value = %q, %v", v, err)
	}
	if d, err := raw.PTTL(ctx, "stickyd:b:be:7fe4").Result(); err != nil || d != -1 {
		t.Fatalf("PTTL of a bucket holding a binding without expiry = %v, %v", d, err)
	}
	if err := s.SetDraining(ctx, "be", "s3", true); err != nil {
		t.Fatal(err)
	}
	if m, err := raw.SMembers(ctx, "stickyd:drain:be").Result(); err != nil || len(m) != 1 || m[0] != "s3" {
		t.Fatalf("raw drain set = %v, %v", m, err)
	}
	// Values written by hand are read back the same way; one without an
	// expiry part is a server that never expires.
	raw.HSet(ctx, keyOf(t, s, "be", "hand"), "hand", "0|!s4")
	if b, err := s.Get(ctx, "be", "hand"); err != nil || b.Server != "s4" || !b.Pinned || b.TTL != 0 {
		t.Fatalf("Get = %+v, %v", b, err)
	}
	raw.HSet(ctx, keyOf(t, s, "be", "bare"), "bare", "s5")
	if c, err := s.GetOrClaim(ctx, "be", "bare", "s1", time.Minute); err != nil || c.Server != "s5" || c.Claimed {
		t.Fatalf("GetOrClaim of a bare value = %+v, %v", c, err)
	}
}

// The bucket's own TTL follows its fields: it covers the longest-lived one,
// none while a field never expires, and is recomputed when that one goes;
// expired fields are not bindings, and writes sweep them out.
func TestBucketLifetime(t *testing.T) {
	ctx := context.Background()
	r := testenv.StartRedis(t)
	s := newTestStore(t, r)
	raw := rawClient(t, r)
	// Ids that share one bucket.
	var ids []string
	k, err := s.hashKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := bucketOf(k, "seed")
	for i := 0; len(ids) < 3; i++ {
		if id := fmt.Sprint("id-", i); bucketOf(k, id) == want {
			ids = append(ids, id)
		}
	}
	key := keyOf(t, s, "be", ids[0])
	pttl := func() time.Duration {
		d, err := raw.PTTL(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	if _, err := s.GetOrClaim(ctx, "be", ids[0], "s1", time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetOrClaim(ctx, "be", ids[1], "s1", time.Hour); err != nil {
		t.Fatal(err)
	}
	if d := pttl(); d <= 59*time.Minute {
		t.Fatalf("bucket PTTL %v, want the hour of its longest field", d)
	}
	if err := s.Put(ctx, store.Binding{Backend: "be", ClientID: ids[2], Server: "s2"}); err != nil {
		t.Fatal(err)
	}
	if d := pttl(); d != -1 {
		t.Fatalf("bucket PTTL %v with a field that never expires, want none (-1)", d)
	}
	if err := s.Delete(ctx, "be", ids[2]); err != nil {
		t.Fatal(err)
	}
	if d := pttl(); d <= 59*time.Minute || d > time.Hour {
		t.Fatalf("bucket PTTL %v after the never-expiring field went, want the hour again", d)
	}
	// An expired field is no binding: not got, not listed, not counted,
	// claimed anew.
	raw.HSet(ctx, key, ids[2], "1000|s3")
	if _, err := s.Get(ctx, "be", ids[2]); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get of an expired field = %v", err)
	}
	if c, err := s.CountByServer(ctx, "be"); err != nil || c["s3"] != 0 {
		t.Fatalf("counts %v, %v", c, err)
	}
	if c, err := s.GetOrClaim(ctx, "be", ids[2], "s1", time.Minute); err != nil || !c.Claimed || c.Server != "s1" {
		t.Fatalf("claim over an expired field = %+v, %v", c, err)
	}
	// Sweeps (a sixteenth of writes) remove dead fields.
	raw.HSet(ctx, key, "dead", "1000|s3")
	for i := 0; i < 2000; i++ {
		if _, err := s.GetOrClaim(ctx, "be", ids[0], "s1", time.Minute); err != nil {
			t.Fatal(err)
		}
		if n, _ := raw.HExists(ctx, key, "dead").Result(); !n {
			return
		}
	}
	t.Fatal("2000 writes to the bucket never swept its expired field")
}

func TestClientOption(t *testing.T) {
	ctx := context.Background()
	r := testenv.StartRedis(t)
	c := rawClient(t, r)
	s, err := New(ctx, Options{Client: c})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetOrClaim(ctx, "be", "c", "s1", 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("Close closed the caller's client: %v", err)
	}
	ring := goredis.NewRing(&goredis.RingOptions{Addrs: map[string]string{"a": r.Addr}})
	defer ring.Close()
	if _, err := New(ctx, Options{Client: ring}); err == nil {
		t.Fatal("New accepted a ring client")
	}
	fcc := goredis.NewFailoverClusterClient(&goredis.FailoverOptions{MasterName: "m", SentinelAddrs: []string{r.Addr}})
	defer fcc.Close()
	if _, err := New(ctx, Options{Client: fcc}); err == nil {
		t.Fatal("New accepted a failover cluster client")
	}
}

func TestRejectsAmbiguousNames(t *testing.T) {
	ctx := context.Background()
	r := testenv.StartRedis(t)
	s := newTestStore(t, r)
	if _, err := s.GetOrClaim(ctx, "a:b", "c", "s1", 0); !errors.Is(err, ErrBackendName) {
		t.Errorf("backend with ':' = %v, want ErrBackendName", err)
	}
	if _, err := s.GetOrClaim(ctx, "be", "c", "!s1", 0); !errors.Is(err, ErrServerName) {
		t.Errorf("server '!s1' = %v, want ErrServerName", err)
	}
	// A '!' from would otherwise match a pinned value and move it.
	if _, err := s.Move(ctx, "be", "c", "!s1", "s2", 0); !errors.Is(err, ErrServerName) {
		t.Errorf("Move from '!s1' = %v, want ErrServerName", err)
	}
	if err := s.Put(ctx, store.Binding{Backend: "be", ClientID: "c", Server: "!x"}); !errors.Is(err, ErrServerName) {
		t.Errorf("Put server '!x' = %v, want ErrServerName", err)
	}
	if _, err := s.List(ctx, "a:b", store.ListOptions{}); !errors.Is(err, ErrBackendName) {
		t.Errorf("List backend with ':' = %v, want ErrBackendName", err)
	}
}

// Redis is down when the store is made: New still succeeds, calls fail, and
// the same store works once Redis is up. Data written before a crash (kill)
// is back after the restart.
func TestRedisDownAndBack(t *testing.T) {
	ctx := context.Background()
	r := testenv.StartRedis(t)
	r.Kill()

	s, err := New(ctx, Options{URL: r.URL})
	if err != nil {
		t.Fatalf("New with Redis down: %v", err)
	}
	defer s.Close()
	if _, err := s.GetOrClaim(ctx, "be", "c", "s1", time.Minute); err == nil {
		t.Fatal("GetOrClaim with Redis down succeeded")
	}
	if err := s.Ping(ctx); err == nil {
		t.Fatal("Ping with Redis down succeeded")
	}

	r.StartAgain(t)
	testenv.Eventually(t, 10*time.Second, func() error {
		_, err := s.GetOrClaim(ctx, "be", "c", "s1", time.Minute)
		return err
	})
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}

	r.Kill()
	if _, err := s.Get(ctx, "be", "c"); err == nil {
		t.Fatal("Get after kill succeeded")
	}
	r.StartAgain(t)
	testenv.Eventually(t, 10*time.Second, func() error {
		c, err := s.GetOrClaim(ctx, "be", "c", "s2", time.Minute)
		if err == nil && (c.Server != "s1" || c.Claimed) {
			t.Fatalf("after restart: %+v, want the binding to s1 back", c)
		}
		return err
	})
}

// The hot path honours a caller deadline shorter than OpTimeout, and fails
// on an already cancelled context without touching Redis.
func TestHotPathHonoursContext(t *testing.T) {
	r := testenv.StartRedis(t)
	s := newTestStore(t, r)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.GetOrClaim(ctx, "be", "c", "s1", 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("GetOrClaim on cancelled ctx = %v, want context.Canceled", err)
	}
	if _, err := s.Get(context.Background(), "be", "c"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("binding written despite cancelled ctx: %v", err)
	}
}

// DeleteByServer's compare-and-delete spares a binding that moved after the
// scan read it.
func TestDeleteIfScriptSparesMovedBinding(t *testing.T) {
	ctx := context.Background()
	r := testenv.StartRedis(t)
	s := newTestStore(t, r)
	if _, err := s.GetOrClaim(ctx, "be", "c", "s2", 0); err != nil { // "moved" to s2
		t.Fatal(err)
	}
	n, err := deleteIfScript.Run(ctx, s.rdb, []string{keyOf(t, s, "be", "c")}, "s1", "!s1", s.channel, "be:").Int()
	if err != nil || n != 0 {
		t.Fatalf("delete-if s1 = %d, %v; want 0", n, err)
	}
	n, err = deleteIfScript.Run(ctx, s.rdb, []string{keyOf(t, s, "be", "c")}, "s2", "!s2", s.channel, "be:").Int()
	if err != nil || n != 1 {
		t.Fatalf("delete-if s2 = %d, %v; want 1", n, err)
	}
}

// Scripts keep working when Redis forgets them (SCRIPT FLUSH, restart).
func TestScriptFlush(t *testing.T) {
	ctx := context.Background()
	r := testenv.StartRedis(t)
	s := newTestStore(t, r)
	raw := rawClient(t, r)
	for i := range 3 {
		if err := raw.ScriptFlush(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		if _, err := s.GetOrClaim(ctx, "be", fmt.Sprint(i), "s1", 0); err != nil {
			t.Fatal(err)
		}
		if err := raw.ScriptFlush(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		if n, err := s.DeleteByServer(ctx, "be", "s1"); err != nil || n != 1 {
			t.Fatalf("DeleteByServer after SCRIPT FLUSH = %d, %v", n, err)
		}
	}
}

func TestGlobEscape(t *testing.T) {
	for in, want := range map[string]string{
		"plain":      "plain",
		`a*b?c[d]e\`: `a\*b\?c\[d\]e\\`,
		"\x00\xff":   "\x00\xff",
	} {
		if got := globEscape(in); got != want {
			t.Errorf("globEscape(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCursor(t *testing.T) {
	for _, c := range []cursor{
		{scan: 0},
		{scan: 1},
		{scan: 1<<64 - 1},
		{node: 2, scan: 12345},
		{node: 1, scan: 7, partial: true, count: 90, end: 0, after: ""},
		{scan: 7, partial: true, count: 4000, end: 1 << 40, after: "id\x00\xff*"},
		{node: 2, tagged: true, tag: 0xdeadbeef, scan: 9},
		{node: 1, tagged: true, tag: 1, scan: 7, partial: true, count: 5, end: 3, after: "x"},
	} {
		got, err := decodeCursor(encodeCursor(c), 4000)
		if err != nil || got != c {
			t.Errorf("round trip %+v = %+v, %v", c, got, err)
		}
	}
	for _, bad := range []string{
		encodeCursor(cursor{scan: 5}) + "AA",                           // trailing bytes
		encodeCursor(cursor{scan: 5})[:3],                              // truncated
		encodeCursor(cursor{tagged: true, tag: 7, scan: 5})[:7],        // truncated tag
		encodeCursor(cursor{scan: 5, partial: true, count: 4001}),      // COUNT out of range
		encodeCursor(cursor{scan: 5, partial: true, count: 0, end: 1}), // COUNT out of range
		"AQ",     // version only
		"AgAABQ", // unknown version 2
		"AQQABQ", // unknown flag
	} {
		if _, err := decodeCursor(bad, 4000); !errors.Is(err, store.ErrBadCursor) {
			t.Errorf("decodeCursor(%q) = %v, want ErrBadCursor", bad, err)
		}
	}
}

// locate follows a cluster master that moved in the list, restarts the
// master at the cursor's index when its own is gone, and rejects an index
// past the list.
func TestLocate(t *testing.T) {
	nodes := []master{{tag: 10}, {tag: 20}, {tag: 30}}
	for _, tc := range []struct {
		in, want cursor
	}{
		{cursor{node: 1, scan: 5}, cursor{node: 1, scan: 5}},
		{cursor{node: 0, tagged: true, tag: 30, scan: 5, partial: true, count: 3, after: "a"},
			cursor{node: 2, tagged: true, tag: 30, scan: 5, partial: true, count: 3, after: "a"}},
		{cursor{node: 5, tagged: true, tag: 20, scan: 5}, cursor{node: 1, tagged: true, tag: 20, scan: 5}},
		{cursor{node: 1, tagged: true, tag: 99, scan: 5, partial: true, count: 3}, cursor{node: 1}},
	} {
		got, err := locate(tc.in, nodes)
		if err != nil || got != tc.want {
			t.Errorf("locate(%+v) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
	for _, c := range []cursor{{node: 3}, {node: 3, tagged: true, tag: 99}} {
		if _, err := locate(c, nodes); !errors.Is(err, store.ErrBadCursor) {
			t.Errorf("locate(%+v) = %v, want ErrBadCursor", c, err)
		}
	}
	// A standalone store has one node.
	if _, err := locate(cursor{node: 1}, []master{{}}); !errors.Is(err, store.ErrBadCursor) {
		t.Errorf("locate(node 1 of 1) = %v, want ErrBadCursor", err)
	}
}

func TestScanPos(t *testing.T) {
	// A table of 8 buckets is walked 0,4,2,6,1,5,3,7 and then 0 (the end).
	walk := []uint64{4, 2, 6, 1, 5, 3, 7, 0}
	for i := 1; i < len(walk); i++ {
		if scanPos(walk[i-1]) >= scanPos(walk[i]) {
			t.Errorf("scanPos(%d) >= scanPos(%d)", walk[i-1], walk[i])
		}
	}
	// Grown to 16 buckets mid-walk, cursor 2 continues 10, 6, ...
	if !(scanPos(2) < scanPos(10) && scanPos(10) < scanPos(6)) {
		t.Error("scanPos order breaks across a resize")
	}
}

func TestScanCount(t *testing.T) {
	if c := scanCount(100, 100, 0, 0); c != 90 {
		t.Errorf("first count = %d, want 90", c)
	}
	if c := scanCount(100, 100, 1000, 0); c != 400 {
		t.Errorf("count with nothing found = %d, want the 4*limit cap", c)
	}
	if c := scanCount(1, 100, 100, 100); c != 1 {
		t.Errorf("count for one more = %d, want 1", c)
	}
}

// Many backends share the keyspace: a page still fills (the SCAN COUNT grows
// as matches are sparse) and nothing is lost.
func TestListSparseBackend(t *testing.T) {
	ctx := context.Background()
	r := testenv.StartRedis(t)
	s := newTestStore(t, r)
	raw := rawClient(t, r)
	pipe := raw.Pipeline()
	for i := range 20000 {
		id := fmt.Sprint(i)
		pipe.HSet(ctx, keyOf(t, s, "noise", id), id, "0|s")
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 300 {
		if err := s.Put(ctx, store.Binding{Backend: "be", ClientID: fmt.Sprint(i), Server: "s"}); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	opts := store.ListOptions{Limit: 100}
	pages := 0
	for {
		p, err := s.List(ctx, "be", opts)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		if len(p.Items) > 100 {
			t.Fatalf("page of %d", len(p.Items))
		}
		for _, b := range p.Items {
			seen[b.ClientID] = true
		}
		if p.NextCursor == "" {
			break
		}
		opts.Cursor = p.NextCursor
	}
	if len(seen) != 300 {
		t.Fatalf("saw %d of 300 bindings", len(seen))
	}
	t.Logf("%d pages for 300 bindings among 20300 keys", pages)
	if pages > 40 {
		t.Fatalf("%d pages: SCAN COUNT does not adapt to sparse matches", pages)
	}
}

// Paging loses nothing while bindings come and go between pages and the
// hash table shrinks under the walk: every binding present throughout is
// listed (some possibly twice), and no page exceeds its limit.
func TestListUnderChurn(t *testing.T) {
	ctx := context.Background()
	r := testenv.StartRedis(t)
	s := newTestStore(t, r)
	raw := rawClient(t, r)
	pipe := raw.Pipeline()
	put := func(c goredis.Cmdable, id string) { c.HSet(ctx, keyOf(t, s, "be", id), id, "0|s") }
	for i := range 1000 {
		put(pipe, fmt.Sprintf("stable-%d", i))
	}
	for i := range 30000 {
		put(pipe, fmt.Sprintf("churn-%d", i))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	opts := store.ListOptions{Limit: 3}
	next := 30000
	for page := 0; ; page++ {
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
		opts.Cursor = p.NextCursor
		switch {
		case page == 300:
			// Drop most bindings, and so most buckets: Redis shrinks the
			// table on its next cron.
			pipe := raw.Pipeline()
			for i := range next {
				id := fmt.Sprintf("churn-%d", i)
				pipe.HDel(ctx, keyOf(t, s, "be", id), id)
			}
			if _, err := pipe.Exec(ctx); err != nil {
				t.Fatal(err)
			}
		case page%5 == 0:
			put(raw, fmt.Sprintf("churn-%d", next))
			id := fmt.Sprintf("churn-%d", next-7)
			raw.HDel(ctx, keyOf(t, s, "be", id), id)
			next++
		}
	}
	dups := 0
	for i := range 1000 {
		n := seen[fmt.Sprintf("stable-%d", i)]
		if n == 0 {
			t.Errorf("stable-%d never listed", i)
		}
		dups += max(n-1, 0)
	}
	t.Logf("%d distinct ids listed, %d stable ids listed twice or more", len(seen), dups)
}

// Every script reads and writes KEYS[1] only, and every call passes exactly
// one key: on Redis Cluster all keys of a script must share a slot, and a
// script touching a key it was not given would break on any slot.
func TestScriptsTouchOneKey(t *testing.T) {
	keyRef := regexp.MustCompile(`KEYS\[[^\]]*\]`)
	for name, src := range map[string]string{
		"claim": claimSrc, "move": moveSrc, "get": getSrc, "deleteIf": deleteIfSrc,
		"put": putSrc, "del": delSrc, "refresh": refreshSrc, "touch": touchSrc,
	} {
		refs := keyRef.FindAllString(src, -1)
		if len(refs) == 0 {
			t.Errorf("%s script uses no key", name)
		}
		for _, r := range refs {
			if r != "KEYS[1]" {
				t.Errorf("%s script refers to %s", name, r)
			}
		}
		// redis.call with a computed key name would hide from KEYS.
		// PUBLISH names a channel, not a key: Redis Cluster delivers it
		// to every node.
		for _, call := range regexp.MustCompile(`redis\.call\('([A-Z]+)', ([^,)]+)`).FindAllStringSubmatch(src, -1) {
			if call[1] != "PUBLISH" && call[2] != "KEYS[1]" {
				t.Errorf("%s script calls Redis on %s", name, call[2])
			}
		}
	}

	// At run time: every EVAL/EVALSHA the Store sends declares one key.
	ctx := context.Background()
	r := testenv.StartRedis(t)
	c := rawClient(t, r)
	h := &evalHook{}
	c.AddHook(h)
	s, err := New(ctx, Options{Client: c})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetOrClaim(ctx, "be", "a", "s1", time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Move(ctx, "be", "a", "s1", "s2", time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "be", "a"); err != nil {
		t.Fatal(err)
	}
	if n, err := s.DeleteByServer(ctx, "be", "s2"); err != nil || n != 1 {
		t.Fatalf("DeleteByServer = %d, %v", n, err)
	}
	if err := s.Put(ctx, store.Binding{Backend: "be", ClientID: "b", Server: "s1"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "be", "b"); err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.evals < 6 {
		t.Fatalf("saw %d script calls, want at least 4", h.evals)
	}
	for _, bad := range h.bad {
		t.Errorf("script call with other than one key: %v", bad)
	}
}

// evalHook records script calls and those not declaring exactly one key.
type evalHook struct {
	mu    sync.Mutex
	evals int
	bad   [][]any
}

func (h *evalHook) DialHook(next goredis.DialHook) goredis.DialHook { return next }

func (h *evalHook) check(cmd goredis.Cmder) {
	switch cmd.Name() {
	case "eval", "evalsha", "eval_ro", "evalsha_ro":
		args := cmd.Args()
		h.mu.Lock()
		h.evals++
		if len(args) < 3 || fmt.Sprint(args[2]) != "1" {
			h.bad = append(h.bad, args)
		}
		h.mu.Unlock()
	}
}

func (h *evalHook) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		h.check(cmd)
		return next(ctx, cmd)
	}
}

func (h *evalHook) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		for _, c := range cmds {
			h.check(c)
		}
		return next(ctx, cmds)
	}
}
