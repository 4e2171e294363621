package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stickyd/stickyd/internal/hashflood"
	"github.com/stickyd/stickyd/internal/testenv"
)

// redisFields sums the fields of every bucket of backend mqtt: the
// bindings stored, expired ones not yet swept included. The second value
// is the largest bucket.
func redisFields(t *testing.T, r *testenv.Redis) (total, largest int64) {
	t.Helper()
	const lua = `local c, n, m = '0', 0, 0
repeat
  local r = redis.call('SCAN', c, 'MATCH', ARGV[1], 'COUNT', 1000)
  c = r[1]
  for _, k in ipairs(r[2]) do
    local l = redis.call('HLEN', k)
    n = n + l
    if l > m then m = l end
  end
until c == '0'
return {n, m}`
	v, err := testenv.RedisDo(r.Addr, "EVAL", lua, "0", "stickyd:b:mqtt:*")
	if err != nil {
		t.Fatal(err)
	}
	a := v.([]any)
	return a[0].(int64), a[1].(int64)
}

// rawConnects sends one bare MQTT 3.1.1 CONNECT per id through HAProxy
// and waits for the CONNACK, with a few workers: the cheapest real
// connection that makes the agent decide. It returns how many failed.
func rawConnects(t *testing.T, addr string, ids []string, workers int) int {
	t.Helper()
	work := make(chan string)
	var mu sync.Mutex
	failed := 0
	var firstErr error
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range work {
				if err := rawConnect(addr, id); err != nil {
					mu.Lock()
					failed++
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for _, id := range ids {
		work <- id
	}
	close(work)
	wg.Wait()
	if firstErr != nil {
		t.Logf("%d of %d raw connects failed, first: %v", failed, len(ids), firstErr)
	}
	return failed
}

func rawConnect(addr, id string) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	vh := []byte{0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 60}
	n := len(vh) + 2 + len(id)
	pkt := []byte{0x10}
	for {
		b := byte(n % 128)
		n /= 128
		if n > 0 {
			b |= 0x80
		}
		pkt = append(pkt, b)
		if n == 0 {
			break
		}
	}
	pkt = append(append(append(pkt, vh...), byte(len(id)>>8), byte(len(id))), id...)
	if _, err := c.Write(pkt); err != nil {
		return err
	}
	ack := make([]byte, 4)
	if _, err := io.ReadFull(c, ack); err != nil {
		return fmt.Errorf("CONNACK for %q: %w", id, err)
	}
	if ack[0] != 0x20 || ack[3] != 0 {
		return fmt.Errorf("CONNACK for %q: % x", id, ack)
	}
	_, _ = c.Write([]byte{0xe0, 0})
	return nil
}

// max_bindings 500: 2000 new clients all connect through HAProxy, at most
// 500 bindings are stored, the rest are counted as not_stored, and the
// stored clients keep their node.
func TestMaxBindingsThroughHAProxy(t *testing.T) {
	r := testenv.StartRedis(t)
	s := newStack(t, stackOpts{redisURL: r.URL, extra: "max_bindings: 500\n", quiet: true})
	clients := ids("cap", 2000)
	if failed := rawConnects(t, s.feAddr, clients, 8); failed != 0 {
		t.Fatalf("%d of 2000 clients could not connect", failed)
	}
	stored, _ := redisFields(t, r)
	notStored := s.metric(`stickyd_decisions_total{outcome="not_stored"}`)
	t.Logf("2000 new clients with max_bindings 500: %d stored, %v not stored", stored, notStored)
	if stored > 500 || stored < 400 {
		t.Fatalf("%d bindings stored, want at most 500 (and most of them)", stored)
	}
	if int(notStored) < 2000-int(stored) {
		t.Fatalf("not_stored = %v, want at least %d", notStored, 2000-stored)
	}
	if !strings.Contains(s.stickyd.Output(), "max_bindings") {
		t.Fatalf("no warning in the agent's log:\n%s", s.stickyd.Output())
	}
	// Bound clients keep their node; every client, stored or not, reaches
	// one (paho, a real MQTT client).
	sample := append(append([]string{}, clients[:40]...), clients[1960:]...)
	first := s.connectAll(sample)
	again := s.connectAll(sample)
	for _, id := range sample {
		if first[id] != again[id] {
			t.Fatalf("%s reached %s, then %s", id, first[id], again[id])
		}
	}
}

// 30,000 ids crafted to share one bucket of the old unkeyed FNV-1a layout
// are spread by the keyed buckets: afterwards 300 of 300 new clients are
// bound (under the old layout every script on that bucket walked all of
// them, the store timed out and the breaker opened). The largest bucket is
// the deterministic check; the store budget is the suite's 200ms rather
// than production's 50ms, which -race under a loaded CI misses by itself.
func TestCraftedBucketFloodLeavesNewClientsBound(t *testing.T) {
	r := testenv.StartRedis(t)
	s := newStack(t, stackOpts{redisURL: r.URL, quiet: true})
	flood := hashflood.IDs("flood/", 30000)
	for _, id := range flood[:10] {
		if hashflood.FNVBucket(id) != 0 {
			t.Fatalf("%q is not in FNV bucket 0", id)
		}
	}
	start := time.Now()
	if failed := rawConnects(t, s.feAddr, flood, 16); failed > 0 {
		t.Fatalf("%d of 30000 crafted connects failed", failed)
	}
	total, largest := redisFields(t, r)
	t.Logf("30000 crafted ids connected in %v: %d stored, largest bucket %d fields", time.Since(start).Round(time.Millisecond), total, largest)
	if largest > 10 {
		t.Fatalf("largest bucket holds %d fields: the crafted ids still collide", largest)
	}
	legit := ids("legit", 300)
	s.connectAll(legit)
	bound := 0
	for _, id := range legit {
		if code, _ := s.api().do("GET", "/v1/backends/mqtt/bindings/"+id, nil); code == http.StatusOK {
			bound++
		}
	}
	if bound != 300 {
		t.Fatalf("%d of 300 new clients bound after the flood", bound)
	}
	if strings.Contains(s.stickyd.Output(), "circuit breaker open") {
		t.Fatalf("the store breaker opened during the flood:\n%s", s.stickyd.Output())
	}
}

// Redis past maxmemory (noeviction) refuses writes: a client bound to n2
// (placed while n1 was down, so the hash alone would send about half to
// n1) keeps n2 through real HAProxy and mosquitto, also after new clients
// (connected, not stored) whose claims Redis refused; the metric and
// /readyz say read-only. The local
// cache is off, so every connect runs the claim script.
func TestBoundClientKeepsNodeWithRedisFull(t *testing.T) {
	r := testenv.StartRedisArgs(t, "--maxmemory-policy", "noeviction")
	s := newStack(t, stackOpts{redisURL: r.URL, extra: "redis_cache_size: 0\n"})
	bound := ids("full", 40)
	s.placeWhileDown("n1", bound)
	// Fill Redis, then set maxmemory below what it uses: every write that
	// may grow memory is refused from then on.
	val := strings.Repeat("x", 1000)
	for i := range 2000 {
		if _, err := testenv.RedisDo(r.Addr, "SET", fmt.Sprint("fill:", i), val); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := testenv.RedisDo(r.Addr, "CONFIG", "SET", "maxmemory", "1mb"); err != nil {
		t.Fatal(err)
	}
	if _, err := testenv.RedisDo(r.Addr, "SET", "probe", "x"); err == nil || !strings.HasPrefix(err.Error(), "OOM") {
		t.Fatalf("SET with Redis full = %v, want OOM", err)
	}
	for round := range 3 {
		for id, n := range s.connectAll(bound) {
			if n != "n2" {
				t.Fatalf("round %d, Redis full: %s reached %s, its binding says n2", round, id, n)
			}
		}
	}
	// New clients connect, unstored; their refused claims do not open the
	// store breaker, so bound clients are still read afterwards.
	fresh := s.connectAll(ids("fresh", 20))
	if len(fresh) != 20 {
		t.Fatalf("new clients with Redis full: %v", fresh)
	}
	for id, n := range s.connectAll(bound) {
		if n != "n2" {
			t.Fatalf("after new clients, Redis full: %s reached %s, its binding says n2", id, n)
		}
	}
	if v := s.metric("stickyd_store_read_only"); v != 1 {
		t.Fatalf("stickyd_store_read_only = %v, want 1", v)
	}
	code, body := s.api().do("GET", "/readyz", nil)
	if code != http.StatusOK || body["status"] != "read_only" {
		t.Fatalf("/readyz = %d %v", code, body)
	}
	code, body = s.api().do("PUT", "/v1/backends/mqtt/bindings/admin", map[string]any{"server": "n1"})
	if code != http.StatusInsufficientStorage || !strings.Contains(fmt.Sprint(body["error"]), "read-only") {
		t.Fatalf("PUT with Redis full = %d %v", code, body)
	}
}
