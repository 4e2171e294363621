package e2e

import (
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stickyd/stickyd/haproxy"
	"github.com/stickyd/stickyd/internal/testenv"
)

// tableEntry returns the server id HAProxy's table holds for a client of
// backend mqtt ("" when it holds none), through the Runtime API.
func (s *stack) tableEntry(id string) string {
	s.t.Helper()
	out := s.runtime("show table mqtt key " + haproxy.TableKey([]byte(id)))
	for _, f := range strings.Fields(out) {
		if v, ok := strings.CutPrefix(f, "server_id="); ok {
			return v
		}
	}
	return ""
}

// timedConnectAll is connectAll that also returns every connect's latency.
func (s *stack) timedConnectAll(ids []string) (map[string]string, []time.Duration, []error) {
	out := map[string]string{}
	var lat []time.Duration
	var errs []error
	var mu sync.Mutex
	work := make(chan string)
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range work {
				start := time.Now()
				node, err := testenv.WhichNode(s.feAddr, id)
				mu.Lock()
				lat = append(lat, time.Since(start))
				if err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", id, err))
				}
				out[id] = node
				mu.Unlock()
			}
		}()
	}
	for _, id := range ids {
		work <- id
	}
	close(work)
	wg.Wait()
	return out, lat, errs
}

func p99(lat []time.Duration) time.Duration {
	if len(lat) == 0 {
		return 0
	}
	slices.Sort(lat)
	return lat[len(lat)*99/100]
}

// Both agents killed after 200 clients are bound (on Redis, two
// instances): every reconnect through either HAProxy succeeds and reaches
// the node its binding names, whatever its entry's age.
func TestAgentsKilledBoundClientsStay(t *testing.T) {
	r := testenv.StartRedis(t)
	a, b := twoInstances(t, r.URL)
	clients := ids("killed", 200)
	bound := a.connectAll(clients)
	// B learns them from its own agent (the shared map).
	for id, n := range b.connectAll(clients) {
		if n != bound[id] {
			t.Fatalf("%s: %s through A, %s through B", id, bound[id], n)
		}
	}
	a.stickyd.Kill()
	b.stickyd.Kill()
	moved := 0
	var all []time.Duration
	for round := 0; round < 3; round++ {
		for _, s := range []*stack{a, b} {
			got, lat, errs := s.timedConnectAll(clients)
			if len(errs) > 0 {
				t.Fatalf("%d of %d connects failed with the agents down, first: %v", len(errs), len(clients), errs[0])
			}
			all = append(all, lat...)
			for id, n := range got {
				if n != bound[id] {
					moved++
					t.Errorf("%s moved from %s to %s with the agents down", id, bound[id], n)
				}
			}
		}
	}
	if moved > 0 {
		t.Fatalf("%d bound clients moved", moved)
	}
	t.Logf("agents down: %d connects, 0 failed, 0 moved, p99 %v", len(all), p99(all).Round(time.Millisecond))
}

// A pin, an evict and an evacuation made through instance A's API reach
// instance B's HAProxy table: the entry is gone from A's table when the
// API answers, and from B's once B's agent hears the change over pub/sub.
func TestBindingChangesClearEveryHAProxyTable(t *testing.T) {
	r := testenv.StartRedis(t)
	a, b := twoInstances(t, r.URL)
	clients := ids("coh", 40)
	bound := b.connectAll(clients)
	a.connectAll(clients)
	for _, id := range clients[:3] {
		if a.tableEntry(id) == "" || b.tableEntry(id) == "" {
			t.Fatalf("%s not in both tables: A %q, B %q", id, a.tableEntry(id), b.tableEntry(id))
		}
	}
	c := a.api()
	// B's agent hears A's change over pub/sub and clears B's table: well
	// under a second on loopback; the bound asserted is generous.
	const remote = 3 * time.Second
	goneFromB := func(id string) {
		t.Helper()
		testenv.Eventually(t, remote, func() error {
			if e := b.tableEntry(id); e != "" {
				return fmt.Errorf("%s still in B's table (server_id=%s)", id, e)
			}
			return nil
		})
	}

	// Pin: the very next connect through B obeys it.
	pin := clients[0]
	code, body := c.do("PUT", "/v1/backends/mqtt/bindings/"+url.PathEscape(pin), map[string]any{"server": other(bound[pin]), "pinned": true})
	if code != http.StatusOK {
		t.Fatalf("pin: %d %v", code, body)
	}
	if e := a.tableEntry(pin); e != "" {
		t.Fatalf("A's table still holds %s (server_id=%s) after the API answered", pin, e)
	}
	goneFromB(pin)
	if got := b.connectAll([]string{pin})[pin]; got != other(bound[pin]) {
		t.Fatalf("pinned %s to %s through A; B sent it to %s", pin, other(bound[pin]), got)
	}

	// Evict: both tables forget it; the next connect asks the agent.
	evict := clients[1]
	if code, _ := c.do("DELETE", "/v1/backends/mqtt/bindings/"+url.PathEscape(evict), nil); code != http.StatusNoContent {
		t.Fatalf("evict: %d", code)
	}
	if e := a.tableEntry(evict); e != "" {
		t.Fatalf("A's table still holds %s after evict", evict)
	}
	goneFromB(evict)

	// Evacuation of n1 through A: every client reaches n2 through B.
	if code, body := c.do("POST", "/v1/backends/mqtt/servers/n1/evacuate?rate=200", nil); code != http.StatusAccepted {
		t.Fatalf("evacuate: %d %v", code, body)
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		if _, body := c.do("GET", "/v1/backends/mqtt/servers/n1/evacuate", nil); body["state"] != "done" {
			return fmt.Errorf("evacuation %v", body)
		}
		return nil
	})
	for _, id := range clients {
		if bound[id] == "n1" && id != evict && id != pin {
			goneFromB(id)
		}
	}
	for id, n := range b.connectAll(clients) {
		if n != "n2" && id != pin && id != evict { // both placed apart
			t.Fatalf("%s reaches %s through B after evacuating n1 through A", id, n)
		}
	}
}

// Clients reconnecting every second for longer than the TTL, mostly
// through HAProxy's fast path, keep their Redis bindings: the freshness
// window (capped at half the TTL) sends them to the agent often enough.
// HAProxy 2.4 has no fast path (no table_idle): there every connect asks
// the agent.
func TestFastPathKeepsRedisBindings(t *testing.T) {
	build := haproxyBuild(t)
	r := testenv.StartRedis(t)
	t.Setenv("STICKYD_TTL", "4s") // read by haproxy-config and serve alike
	s := newStack(t, stackOpts{redisURL: r.URL, extra: "  local_fresh: 1m\n"})
	clients := ids("fast", 20)
	bound := s.connectAll(clients)
	deadline := time.Now().Add(10 * time.Second) // 2.5 TTLs
	for time.Now().Before(deadline) {
		time.Sleep(time.Second)
		for id, n := range s.connectAll(clients) {
			if n != bound[id] {
				t.Fatalf("%s moved from %s to %s", id, bound[id], n)
			}
		}
	}
	c := s.api()
	for _, id := range clients {
		code, b := c.do("GET", "/v1/backends/mqtt/bindings/"+id, nil)
		if code != http.StatusOK || b["server"] != bound[id] {
			t.Fatalf("binding of %s after 10s of reconnects (ttl 4s): %d %v, want %s", id, code, b, bound[id])
		}
	}
	out := s.haproxy.Proc.Output()
	fast, asked := strings.Count(out, "agent=- local=n"), strings.Count(out, " key=fast-")-strings.Count(out, "agent=- local=n")
	t.Logf("HAProxy %s: %d connects routed by HAProxy alone, %d asked the agent", build.Version, fast, asked)
	switch {
	case build.Version.FastPath() && fast == 0:
		t.Fatal("no connect took the fast path")
	case !build.Version.FastPath() && fast != 0:
		t.Fatalf("HAProxy %s has no fast path, yet %d connects took it", build.Version, fast)
	}
}

// Agent restarted, then Redis restarted, then HAProxy reloaded (-sf), all
// during a connection storm: no connect fails and nobody moves.
func TestRestartsDuringStormMoveNobody(t *testing.T) {
	r := testenv.StartRedis(t)
	s := newStack(t, stackOpts{redisURL: r.URL})
	clients := ids("restart", 80)
	bound := s.connectAll(clients)
	stop := make(chan struct{})
	st := startStorm(t, []string{s.feAddr}, clients, 6, stop)
	time.Sleep(time.Second)
	s.stickyd.Kill()
	time.Sleep(time.Second)
	s.startStickyd()
	time.Sleep(time.Second)
	r.Kill()
	time.Sleep(time.Second)
	r.StartAgain(t)
	time.Sleep(time.Second)
	s.reload()
	time.Sleep(2 * time.Second)
	close(stop)
	total, failures, nodes := st.wait()
	if len(failures) > 0 {
		t.Fatalf("%d of %d connections failed, first: %v", len(failures), total, failures[0])
	}
	for _, id := range clients {
		if len(nodes[id]) != 1 || nodes[id][bound[id]] == 0 {
			t.Fatalf("%s reached %v during the storm, bound to %s", id, nodes[id], bound[id])
		}
	}
	for id, n := range s.connectAll(clients) {
		if n != bound[id] {
			t.Fatalf("%s reached %s afterwards, bound to %s", id, n, bound[id])
		}
	}
	t.Logf("storm: %d connections through agent, Redis and HAProxy restarts: 0 failed, 0 moved", total)
}

// spoe_listen: unix@/path: the generated configuration reaches the agent
// over the unix socket, every new client is decided by it, and a killed
// agent's stale socket file does not stop the next one from listening.
func TestSPOEOverUnixSocket(t *testing.T) {
	s := newStack(t, stackOpts{unixSPOE: true, extra: "  local_fresh: 0s\n"})
	cfg, err := os.ReadFile(filepath.Join(s.dir, "haproxy", haproxy.ConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	if want := "server agent1 " + s.spoeAddr + " check"; !strings.Contains(string(cfg), want) {
		t.Fatalf("no %q in the generated configuration", want)
	}
	check := func(prefix string) {
		t.Helper()
		clients := ids(prefix, 20)
		first := s.connectAll(clients)
		for id, n := range s.connectAll(clients) {
			if n != first[id] {
				t.Fatalf("%s: %s then %s", id, first[id], n)
			}
			if !strings.Contains(s.haproxy.Proc.Output(), "key="+id+" agent="+n) {
				t.Fatalf("the agent did not decide %s", id)
			}
		}
	}
	check("unix")
	s.stickyd.Kill()
	s.startStickyd()
	s.waitAgentUsed()
	check("unix-again")
}

// The agent (memory store) returns after an outage with no bindings:
// clients HAProxy routed meanwhile, by its table or by the hash fallback,
// keep their node, because the agent adopts the server HAProxy sends as
// "seen" instead of placing them by rendezvous.
func TestAgentReturnsAndAdoptsHAProxysPlacements(t *testing.T) {
	s := newStack(t, stackOpts{extra: "  local_fresh: 0s\n"})
	bound := s.connectAll(ids("adopt-bound", 60))
	s.stickyd.Kill()
	testenv.Eventually(t, 10*time.Second, func() error { // HAProxy's check
		if !strings.Contains(s.haproxy.Proc.Output(), "stickyd_agents/agent1 is DOWN") {
			return fmt.Errorf("agent not marked down yet")
		}
		return nil
	})
	fallback := s.connectAll(ids("adopt-new", 60))
	s.startStickyd()
	s.waitAgentUsed()
	c := s.api()
	for _, want := range []map[string]string{bound, fallback} {
		for id, n := range s.connectAll(slices.Collect(maps.Keys(want))) {
			if n != want[id] {
				t.Fatalf("%s moved from %s to %s when the agent returned", id, want[id], n)
			}
			if code, b := c.do("GET", "/v1/backends/mqtt/bindings/"+id, nil); code != http.StatusOK || b["server"] != want[id] {
				t.Fatalf("binding of %s: %d %v, want %s", id, code, b, want[id])
			}
		}
	}
}
