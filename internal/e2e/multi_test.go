package e2e

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stickyd/stickyd/internal/testenv"
)

// twoInstances is two HAProxy+stickyd pairs in front of the same brokers,
// sharing one Redis: what several load balancers behind DNS look like.
func twoInstances(t *testing.T, redisURL string, extra ...string) (a, b *stack) {
	t.Helper()
	a = newStack(t, stackOpts{redisURL: redisURL, extra: strings.Join(extra, "")})
	b = newStack(t, stackOpts{redisURL: redisURL, shared: a.brokers, extra: strings.Join(extra, "")})
	return a, b
}

// Two instances, one map: clients placed through A while n1 was down
// (so their binding is not what the hash would pick) reach the same node
// through B, which never saw them. On each Redis topology: standalone, a
// three-master Cluster, and Sentinel (master, replica, three sentinels) with
// a failover between placement and reconnection.
func TestTwoInstancesShareOneMap(t *testing.T) {
	topologies := []struct {
		name  string
		start func(t *testing.T) (url string, afterPlacement func())
	}{
		{"standalone", func(t *testing.T) (string, func()) { return testenv.StartRedis(t).URL, func() {} }},
		{"cluster", func(t *testing.T) (string, func()) { return testenv.StartRedisCluster(t).URL, func() {} }},
		{"sentinel", func(t *testing.T) (string, func()) {
			rs := testenv.StartRedisSentinel(t)
			return rs.URL, func() {
				// Let the replica catch up, then lose the master.
				time.Sleep(time.Second)
				rs.Failover(t)
			}
		}},
	}
	for _, topo := range topologies {
		t.Run(topo.name, func(t *testing.T) {
			url, afterPlacement := topo.start(t)
			a, b := twoInstances(t, url)
			clients := ids("shared", 120)
			first := a.placeWhileDown("n1", clients)
			afterPlacement()
			for round := 0; round < 4; round++ {
				via := []*stack{b, a}[round%2]
				var got map[string]string
				if round == 0 {
					// After a failover the agents reconnect by themselves;
					// meanwhile they fail open, so wait for the map to answer.
					testenv.Eventually(t, 30*time.Second, func() error {
						got = via.connectAll(clients)
						for _, id := range clients {
							if got[id] != first[id] {
								return fmt.Errorf("%s reached %s, first %s", id, got[id], first[id])
							}
						}
						return nil
					})
					continue
				}
				got = via.connectAll(clients)
				for _, id := range clients {
					if got[id] != first[id] {
						t.Fatalf("round %d via %s: %s reached %s, first %s", round, via.feAddr, id, got[id], first[id])
					}
				}
			}
			// New clients, alternating instances, each stay on one node.
			fresh := ids("alt", 60)
			seen := map[string]string{}
			for round := 0; round < 4; round++ {
				for id, n := range []*stack{a, b}[round%2].connectAll(fresh) {
					if seen[id] != "" && seen[id] != n {
						t.Fatalf("%s reached %s then %s", id, seen[id], n)
					}
					seen[id] = n
				}
			}
		})
	}
}

// Atomic first placement: the two agents disagree on where new clients
// belong (B's HAProxy holds n1 in drain, which B's agent reads from the
// Runtime API, so B proposes n2 for everyone while A proposes the hash).
// The same new ids connect through both at once: every id ends on one
// node, and every CONNECT of it went there.
func TestAtomicFirstPlacementAcrossInstances(t *testing.T) {
	r := testenv.StartRedis(t)
	a, b := twoInstances(t, r.URL)
	b.runtime("set server mqtt/n1 state drain")
	// B's agent polls drain state every second: wait until it obeys.
	testenv.Eventually(t, 15*time.Second, func() error {
		code, body := b.api().do("GET", "/v1/backends/mqtt/servers/n1", nil)
		if code != http.StatusOK || body["haproxy_drain"] != true {
			return fmt.Errorf("B's agent does not see the drain yet: %d %v", code, body)
		}
		return nil
	})
	// Through B alone, new clients never land on the drained n1.
	for id, n := range b.connectAll(ids("b-only", 40)) {
		if n != "n1" {
			continue
		}
		t.Fatalf("%s placed on n1, drained in B's HAProxy", id)
	}

	clients := ids("race", 150)
	var wg sync.WaitGroup
	var failures sync.Map
	// A walks the ids forward and B backward, so each instance is first
	// for some of them however fast either runs.
	backward := slices.Clone(clients)
	slices.Reverse(backward)
	for i, via := range []*stack{a, b, a, b} {
		order := clients
		if i%2 == 1 {
			order = backward
		}
		wg.Add(1)
		go func(via *stack) {
			defer wg.Done()
			for _, id := range order {
				// Connect-only: the same id connecting twice at once makes the
				// broker take the older session over, which is not a failure.
				if err := testenv.ConnectOnly(via.feAddr, id); err != nil {
					failures.Store(id, err)
				}
			}
		}(via)
	}
	wg.Wait()
	failures.Range(func(k, v any) bool { t.Fatalf("%v: %v", k, v); return false })
	// Where each CONNECT went, from the brokers' own logs.
	perNode := map[string]int{}
	testenv.Eventually(t, 15*time.Second, func() error {
		logs := map[string]map[string]int{"n1": a.broker("n1").Connections(), "n2": a.broker("n2").Connections()}
		perNode = map[string]int{}
		for _, id := range clients {
			on1, on2 := logs["n1"][id], logs["n2"][id]
			if on1 > 0 && on2 > 0 {
				t.Fatalf("%s reached both nodes (n1 %d, n2 %d)", id, on1, on2)
			}
			if on1+on2 != 4 {
				return fmt.Errorf("%s: brokers logged %d of 4 connections", id, on1+on2)
			}
			n := "n1"
			if on2 > 0 {
				n = "n2"
			}
			perNode[n]++
			code, body := a.api().do("GET", "/v1/backends/mqtt/bindings/"+id, nil)
			if code != http.StatusOK || body["server"] != n {
				t.Fatalf("%s reached %s but its binding is %d %v", id, n, code, body)
			}
		}
		return nil
	})
	// A's hash choice won for some ids (n1), B's for others: the claim,
	// not the hash, is what kept them together.
	if perNode["n1"] == 0 || perNode["n2"] == 0 {
		t.Fatalf("placement did not mix both agents' choices: %v", perNode)
	}
	t.Logf("%d ids raced through both instances: one node each, %v", len(clients), perNode)
}

// Evacuation moves a server's bindings away at a given rate, visibly.
func TestEvacuationThroughHAProxy(t *testing.T) {
	r := testenv.StartRedis(t)
	s := newStack(t, stackOpts{redisURL: r.URL})
	clients := ids("evac", 60)
	s.connectAll(clients)
	c := s.api()
	_, srv := c.do("GET", "/v1/backends/mqtt/servers/n1", nil)
	onN1 := int(srv["bindings"].(float64))
	if onN1 == 0 {
		t.Fatal("no binding on n1")
	}
	code, body := c.do("POST", "/v1/backends/mqtt/servers/n1/evacuate?rate=40", nil)
	if code != http.StatusAccepted || body["state"] != "running" {
		t.Fatalf("start: %d %v", code, body)
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		code, body = c.do("GET", "/v1/backends/mqtt/servers/n1/evacuate", nil)
		if body["state"] != "done" {
			return fmt.Errorf("evacuation: %d %v", code, body)
		}
		return nil
	})
	if int(body["moved"].(float64)) != onN1 {
		t.Fatalf("moved %v, want %d", body["moved"], onN1)
	}
	if _, srv = c.do("GET", "/v1/backends/mqtt/servers/n1", nil); srv["bindings"].(float64) != 0 || srv["draining"] != true {
		t.Fatalf("n1 after evacuation: %v", srv)
	}
	for id, n := range s.connectAll(clients) {
		if n != "n2" {
			t.Fatalf("%s still reaches %s after evacuating n1", id, n)
		}
	}
}

// Redis stops in the middle of a connection storm through two instances:
// no connection fails, both agents fall back to the same rendezvous answer,
// the breaker stops paying the Redis timeout, and when Redis returns the
// agents use it again; what was written before the outage is still there.
func TestRedisOutageDuringStorm(t *testing.T) {
	r := testenv.StartRedis(t)
	a, b := twoInstances(t, r.URL)
	// Bindings that differ from the hash: placed while n1 was down.
	kept := ids("kept", 40)
	a.placeWhileDown("n1", kept)
	// Give Redis' once-a-second AOF fsync time to persist them.
	time.Sleep(1500 * time.Millisecond)

	stop := make(chan struct{})
	st := startStorm(t, []string{a.feAddr, b.feAddr}, ids("storm", 80), 6, stop)
	time.Sleep(2 * time.Second)
	r.Kill()
	time.Sleep(4 * time.Second)
	outage := ids("outage", 40)
	during := map[string]string{}
	for i, via := range []*stack{a, b} {
		for id, n := range via.connectAll(outage) {
			if i == 1 && during[id] != n {
				t.Fatalf("Redis down: %s reached %s via A and %s via B", id, during[id], n)
			}
			during[id] = n
		}
	}
	r.StartAgain(t)
	time.Sleep(4 * time.Second)
	close(stop)
	total, failures, _ := st.wait()
	if len(failures) > 0 {
		t.Fatalf("%d of %d connections failed during the outage, first: %v", len(failures), total, failures[0])
	}
	for _, s := range []*stack{a, b} {
		if !strings.Contains(s.stickyd.Output(), "circuit breaker open") {
			t.Fatalf("%s: breaker never opened:\n%s", s.spoeAddr, s.stickyd.Output())
		}
	}
	// Redis is back: the agents use it again without a restart.
	testenv.Eventually(t, 20*time.Second, func() error {
		id := fmt.Sprintf("after-%d", time.Now().UnixNano())
		if _, err := testenv.WhichNode(b.feAddr, id); err != nil {
			return err
		}
		if code, _ := a.api().do("GET", "/v1/backends/mqtt/bindings/"+id, nil); code != http.StatusOK {
			return fmt.Errorf("new client not bound in Redis yet (%d)", code)
		}
		return nil
	})
	for id, n := range b.connectAll(kept) {
		if n != "n2" {
			t.Fatalf("binding of %s written before the outage was lost (reached %s)", id, n)
		}
	}
	t.Logf("storm: %d connections, 0 failed, through a Redis outage", total)
}

// One agent is killed and its HAProxy reloaded (-sf) during a storm: no
// connection fails, the bindings stay.
func TestAgentLossAndHAProxyReloadDuringStorm(t *testing.T) {
	r := testenv.StartRedis(t)
	a, b := twoInstances(t, r.URL)
	clients := ids("reload", 60)
	first := a.connectAll(clients)

	stop := make(chan struct{})
	st := startStorm(t, []string{a.feAddr, b.feAddr}, clients, 6, stop)
	time.Sleep(time.Second)
	a.stickyd.Kill()
	time.Sleep(2 * time.Second)
	b.reload()
	time.Sleep(2 * time.Second)
	a.startStickyd()
	time.Sleep(2 * time.Second)
	close(stop)
	total, failures, nodes := st.wait()
	if len(failures) > 0 {
		t.Fatalf("%d of %d connections failed, first: %v", len(failures), total, failures[0])
	}
	// A's HAProxy answered from its table while its agent was dead, and B's
	// reloaded HAProxy asked its agent: nobody moved.
	for _, id := range clients {
		if len(nodes[id]) != 1 || nodes[id][first[id]] == 0 {
			t.Fatalf("%s reached %v during the storm, bound to %s", id, nodes[id], first[id])
		}
	}
	// Through B (agent alive, reloaded), every connection followed the map.
	for _, id := range clients {
		if got := b.connectAll([]string{id})[id]; got != first[id] {
			t.Fatalf("%s reached %s after reload, bound to %s", id, got, first[id])
		}
	}
	if !strings.Contains(a.haproxy.Proc.Output(), "agent=- local=n") {
		t.Fatal("A's HAProxy never answered from its table")
	}
	t.Logf("storm: %d connections through an agent kill and an HAProxy reload, 0 failed", total)
}

// metric reads one sample from an agent's /metrics ("name" or
// `name{label="v"}` exactly as exposed); 0 when absent.
func (s *stack) metric(sample string) float64 {
	s.t.Helper()
	resp, err := http.Get("http://" + s.apiAddr + "/metrics")
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f
		}
	}
	return 0
}

// The agents' local caches follow every change, whichever agent makes it:
// clients that B answers from its cache are pinned elsewhere through A's
// API, and their next connection through B reaches the new node.
func TestCachedBindingsFollowChangesMadeElsewhere(t *testing.T) {
	r := testenv.StartRedis(t)
	// No fast path in HAProxy: every reconnect reaches the agent's cache.
	a, b := twoInstances(t, r.URL, "  local_fresh: 0s\n")
	clients := ids("cached", 40)
	first := b.connectAll(clients)
	hits := b.metric(`stickyd_redis_cache_lookups_total{result="hit"}`)
	for round := 0; round < 3; round++ {
		for id, n := range b.connectAll(clients) {
			if n != first[id] {
				t.Fatalf("%s reached %s, first %s", id, n, first[id])
			}
		}
	}
	if got := b.metric(`stickyd_redis_cache_lookups_total{result="hit"}`) - hits; got < float64(2*len(clients)) {
		t.Fatalf("B answered %v reconnects from its cache, want most of %d: the test would not exercise it", got, 3*len(clients))
	}
	other := map[string]string{"n1": "n2", "n2": "n1"}
	for _, id := range clients[:20] {
		if code, body := a.api().do("PUT", "/v1/backends/mqtt/bindings/"+id, map[string]any{"server": other[first[id]]}); code != http.StatusOK {
			t.Fatalf("pin %s through A: %d %v", id, code, body)
		}
	}
	// Invalidations travel over pub/sub: allow for a slow delivery, but a
	// cache that missed them would answer the old node for a minute.
	testenv.Eventually(t, 10*time.Second, func() error {
		got := b.connectAll(clients[:20])
		for _, id := range clients[:20] {
			if got[id] != other[first[id]] {
				return fmt.Errorf("%s reached %s through B after A pinned it to %s", id, got[id], other[first[id]])
			}
		}
		return nil
	})
	if n := b.metric("stickyd_redis_cache_invalidations_total"); n < 20 {
		t.Fatalf("B saw %v invalidations, want at least 20", n)
	}
	// Pinned: through either instance, every connection goes there.
	for id, n := range a.connectAll(clients[:20]) {
		if n != other[first[id]] {
			t.Fatalf("%s reached %s through A, pinned to %s", id, n, other[first[id]])
		}
	}
}
