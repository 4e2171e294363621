package e2e

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stickyd/stickyd/internal/testenv"
)

// Brokers that refuse any connection without a PROXY v2 header (the test's
// fake: mosquitto cannot read PROXY) behind proxy_protocol: v2, and HAProxy
// behind a load balancer (accept_proxy): a storm of real MQTT clients, each
// announcing its own source address in a PROXY header, connects without a
// failure over both brokers, and each broker is told the client's address,
// not HAProxy's. The brokers stay up, so the MQTT health checks carry the
// header too. The plain bind is IPv6.
func TestProxyV2ToBrokers(t *testing.T) {
	b1, b2 := testenv.StartProxyBroker(t, "n1"), testenv.StartProxyBroker(t, "n2")
	spoe, api, fe := testenv.FreeAddr(t), testenv.FreeAddr(t), testenv.FreeAddr6(t)
	s := startTStack(t, fmt.Sprintf(`spoe_listen: %q
api_listen: %q
store_timeout: 200ms
backends:
  - name: mqtt
    proxy_protocol: v2
    servers:
      - {name: n1, address: %q}
      - {name: n2, address: %q}
haproxy:
  bind: %q
  accept_proxy: true
  timeout_processing: 1s
  check_interval: 200ms
`, spoe, api, b1.Addr, b2.Addr, fe), spoe, api, fe)
	lbDst := &net.TCPAddr{IP: net.ParseIP("198.51.100.1"), Port: 1883}
	s.waitAgent("warmup", func() error {
		return testenv.ConnectBehindProxy(fe, "warmup", &net.TCPAddr{IP: net.ParseIP("192.0.2.1"), Port: 1000}, lbDst)
	})
	// Without the load balancer's header, HAProxy refuses the connection.
	if err := testenv.ConnectOnly(fe, "no-header"); err == nil {
		t.Fatal("a client without a PROXY header was accepted by an accept_proxy listener")
	}

	var work []proxied
	clients := ids("pp", 40)
	for r := 0; r < 5; r++ {
		for i, id := range clients {
			c := proxied{id: id, src: &net.TCPAddr{IP: net.IPv4(203, 0, 113, byte(1+i)), Port: 20000 + r}, dst: lbDst}
			if i%2 == 1 { // IPv6 clients too
				c.src = &net.TCPAddr{IP: net.ParseIP(fmt.Sprintf("2001:db8::%x", 1+i)), Port: 20000 + r}
				c.dst = &net.TCPAddr{IP: net.ParseIP("2001:db8::ffff"), Port: 1883}
			}
			work = append(work, c)
		}
	}
	if failures := connectBehindProxy(fe, work, 8); len(failures) > 0 {
		t.Fatalf("%d of %d connects failed; first: %v", len(failures), len(work), failures[0])
	}
	brokers := []*testenv.ProxyBroker{b1, b2}
	waitHealthChecks(t, brokers, 3)
	perNode := checkProxied(t, brokers, work, "pp-")
	if perNode["n1"] == 0 || perNode["n2"] == 0 {
		t.Fatalf("per node %v: want both brokers used", perNode)
	}
	if strings.Contains(s.haproxy.Proc.Output(), " is DOWN") {
		t.Fatalf("a broker was marked down:\n%s", s.haproxy.Proc.Output())
	}
	t.Logf("%d connects, 0 failed, each id on one node, every broker told the client's own address; per node %v", len(work), perNode)
}

// proxied is one connect from behind the load balancer: the client id and
// the addresses its PROXY header claims.
type proxied struct {
	id       string
	src, dst *net.TCPAddr
}

// connectBehindProxy runs the connects with workers and returns the
// failures.
func connectBehindProxy(fe string, work []proxied, workers int) []error {
	var mu sync.Mutex
	var failures []error
	ch := make(chan proxied)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range ch {
				if err := testenv.ConnectBehindProxy(fe, c.id, c.src, c.dst); err != nil {
					mu.Lock()
					failures = append(failures, fmt.Errorf("%s from %s: %w", c.id, c.src, err))
					mu.Unlock()
				}
			}
		}()
	}
	for _, c := range work {
		ch <- c
	}
	close(ch)
	wg.Wait()
	return failures
}

// waitHealthChecks waits until every broker has seen n of HAProxy's MQTT
// health checks: a PROXY v2 header (LOCAL), then a CONNECT with an empty
// client id.
func waitHealthChecks(t *testing.T, brokers []*testenv.ProxyBroker, n int) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, func() error {
		for _, b := range brokers {
			checks := 0
			for _, pc := range b.Conns() {
				if pc.Local && pc.Connect && pc.ClientID == "" {
					checks++
				}
			}
			if checks < n {
				return fmt.Errorf("%s: %d health checks so far", b.Name, checks)
			}
		}
		return nil
	})
}

// checkProxied checks that every connect of work (client ids with prefix)
// reached a broker exactly once, with the addresses it claimed, each id on
// one broker, and that no broker refused a connection; it returns the
// connects per broker.
func checkProxied(t *testing.T, brokers []*testenv.ProxyBroker, work []proxied, prefix string) map[string]int {
	t.Helper()
	want := map[string]proxied{} // claimed source -> the connect
	for _, c := range work {
		want[c.src.String()] = c
	}
	node := map[string]string{}
	perNode := map[string]int{}
	for _, b := range brokers {
		for _, pc := range b.Conns() {
			if pc.Local || !strings.HasPrefix(pc.ClientID, prefix) {
				continue
			}
			c, ok := want[pc.Src]
			if !ok || c.id != pc.ClientID || pc.Dst != c.dst.String() {
				t.Fatalf("%s: %s arrived with PROXY %s -> %s; it claimed %v", b.Name, pc.ClientID, pc.Src, pc.Dst, c)
			}
			delete(want, pc.Src)
			if prev, ok := node[pc.ClientID]; ok && prev != b.Name {
				t.Fatalf("%s reached %s and %s", pc.ClientID, prev, b.Name)
			}
			node[pc.ClientID] = b.Name
			perNode[b.Name]++
		}
		if b.Refused() != 0 {
			t.Fatalf("%s refused %d connections without a PROXY v2 header", b.Name, b.Refused())
		}
	}
	if len(want) != 0 {
		t.Fatalf("%d connects never reached a broker", len(want))
	}
	return perNode
}
