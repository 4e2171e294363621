package e2e

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stickyd/stickyd/internal/testenv"
)

// tstack is stickyd and HAProxy on a configuration the test writes whole:
// the transport options (TLS, PROXY, health checks) need more than
// newStack's template.
type tstack struct {
	t       *testing.T
	dir     string
	apiAddr string
	stickyd *testenv.Process
	haproxy *testenv.HAProxy
}

// startTStack writes cfg, checks it with `stickyd check-config` (which
// reads the certificates), generates HAProxy's configuration with
// --log-connections, and starts stickyd, then HAProxy (waiting for waitAddr).
func startTStack(t *testing.T, cfg, spoeAddr, apiAddr, waitAddr string) *tstack {
	t.Helper()
	testenv.RequireBinary(t, "haproxy")
	s := &tstack{t: t, dir: t.TempDir(), apiAddr: apiAddr}
	path := filepath.Join(s.dir, "stickyd.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	bin := testenv.StickydBinary(t)
	if out, err := exec.Command(bin, "check-config", "--config", path).CombinedOutput(); err != nil {
		t.Fatalf("check-config: %v\n%s", err, out)
	}
	if out, err := exec.Command(bin, "haproxy-config", "--config", path, "--out", filepath.Join(s.dir, "haproxy"), "--log-connections").CombinedOutput(); err != nil {
		t.Fatalf("haproxy-config: %v\n%s", err, out)
	}
	s.stickyd = testenv.StartStickyd(t, path, spoeAddr)
	s.haproxy = testenv.StartHAProxy(t, filepath.Join(s.dir, "haproxy"), waitAddr)
	return s
}

// waitAgent connects with key until HAProxy logs the agent's answer for it.
func (s *tstack) waitAgent(key string, connect func() error) {
	s.t.Helper()
	testenv.Eventually(s.t, 20*time.Second, func() error {
		if err := connect(); err != nil {
			return err
		}
		if !strings.Contains(s.haproxy.Proc.Output(), "key="+key+" agent=n") {
			return fmt.Errorf("agent not answering for %s yet", key)
		}
		return nil
	})
}

// logLines counts HAProxy's connection log lines holding every part.
func (s *tstack) logLines(parts ...string) int {
	n := 0
	for _, l := range strings.Split(s.haproxy.Proc.Output(), "\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(l, p)
		}
		if all {
			n++
		}
	}
	return n
}

// binding returns the server of a binding over the API ("" when none).
func (s *tstack) binding(key string) string {
	s.t.Helper()
	code, body := (&apiClient{t: s.t, base: "http://" + s.apiAddr}).do("GET", "/v1/backends/mqtt/bindings/"+url.PathEscape(key), nil)
	if code != 200 {
		return ""
	}
	srv, _ := body["server"].(string)
	return srv
}

// Real mosquitto_sub clients over the TLS listener (a certificate made
// with openssl, verified with --cafile) get a binding and keep their node
// across reconnects; the same ids on the plain listener share that one
// binding. IPv6 everywhere but the plain listener: the TLS bind, the
// brokers' addresses and the SPOE agent.
func TestTLSListenerBesidePlain(t *testing.T) {
	sub := testenv.RequireBinary(t, "mosquitto_sub")
	pki := testenv.NewPKI(t)
	n1, n2 := testenv.StartMosquittoOn(t, "n1", "::1"), testenv.StartMosquittoOn(t, "n2", "::1")
	spoe, api, plain, tlsAddr := testenv.FreeAddr6(t), testenv.FreeAddr(t), testenv.FreeAddr(t), testenv.FreeAddr6(t)
	s := startTStack(t, fmt.Sprintf(`spoe_listen: %q
api_listen: %q
store_timeout: 200ms
backends:
  - name: mqtt
    servers:
      - {name: n1, address: %q}
      - {name: n2, address: %q}
haproxy:
  bind: %q
  tls: {bind: %q, crt: %q}
  timeout_processing: 1s
  check_interval: 200ms
`, spoe, api, n1.Addr, n2.Addr, plain, tlsAddr, pki.Server(t)), spoe, api, plain)
	s.waitAgent("warmup", func() error { _, err := testenv.WhichNode(plain, "warmup"); return err })

	host, port, _ := net.SplitHostPort(tlsAddr)
	overTLS := func(id string) string {
		t.Helper()
		out, err := exec.Command(sub, "-h", host, "-p", port, "--cafile", pki.CA, "-i", id,
			"-t", testenv.NodeTopic, "-C", "1", "-W", "10").CombinedOutput()
		if err != nil {
			t.Fatalf("mosquitto_sub over TLS as %s: %v\n%s", id, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	clients := ids("tls", 16)
	first := map[string]string{}
	perNode := map[string]int{}
	for _, id := range clients {
		first[id] = overTLS(id)
		perNode[first[id]]++
	}
	if perNode["n1"] == 0 || perNode["n2"] == 0 || perNode["n1"]+perNode["n2"] != len(clients) {
		t.Fatalf("TLS clients reached %v, want both nodes", perNode)
	}
	const rounds = 3
	for r := 0; r < rounds; r++ {
		for _, id := range clients {
			if got := overTLS(id); got != first[id] {
				t.Fatalf("round %d: %s over TLS reached %s, first %s", r, id, got, first[id])
			}
			got, err := testenv.WhichNode(plain, id)
			if err != nil || got != first[id] {
				t.Fatalf("round %d: %s over the plain listener reached %q (%v), its TLS binding is %s", r, id, got, err, first[id])
			}
		}
	}
	logs := map[string]map[string]int{"n1": n1.Connections(), "n2": n2.Connections()}
	for _, id := range clients {
		other := map[string]string{"n1": "n2", "n2": "n1"}[first[id]]
		if on, off := logs[first[id]][id], logs[other][id]; on != 1+2*rounds || off != 0 {
			t.Fatalf("%s: broker %s logged %d connections (want %d), %s %d (want 0)", id, first[id], on, 1+2*rounds, other, off)
		}
		if b := s.binding(id); b != first[id] {
			t.Fatalf("%s: binding %q, want %s", id, b, first[id])
		}
	}
	// HAProxy's own view: %ft is "fe_mqtt~" on the TLS listener.
	testenv.Eventually(t, 10*time.Second, func() error {
		id := clients[0]
		if tl, pl := s.logLines("fe_mqtt~ ", "key="+id+" "), s.logLines("fe_mqtt ", "key="+id+" "); tl != 1+rounds || pl != rounds {
			return fmt.Errorf("%s: %d TLS and %d plain connections logged, want %d and %d", id, tl, pl, 1+rounds, rounds)
		}
		return nil
	})
	t.Logf("%d ids, %d connections over TLS and %d plain, each id on one node; spread %v", len(clients), len(clients)*(1+rounds), len(clients)*rounds, perNode)
}

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

	clients := ids("pp", 40)
	const rounds = 5
	type conn struct {
		id       string
		src, dst *net.TCPAddr
	}
	var work []conn
	for r := 0; r < rounds; r++ {
		for i, id := range clients {
			c := conn{id: id, src: &net.TCPAddr{IP: net.IPv4(203, 0, 113, byte(1+i)), Port: 20000 + r}, dst: lbDst}
			if i%2 == 1 { // IPv6 clients too
				c.src = &net.TCPAddr{IP: net.ParseIP(fmt.Sprintf("2001:db8::%x", 1+i)), Port: 20000 + r}
				c.dst = &net.TCPAddr{IP: net.ParseIP("2001:db8::ffff"), Port: 1883}
			}
			work = append(work, c)
		}
	}
	var mu sync.Mutex
	var failures []error
	ch := make(chan conn)
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
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
	if len(failures) > 0 {
		t.Fatalf("%d of %d connects failed; first: %v", len(failures), len(work), failures[0])
	}

	want := map[string]conn{} // claimed source -> the connection
	for _, c := range work {
		want[c.src.String()] = c
	}
	node := map[string]string{}
	perNode := map[string]int{}
	// HAProxy's MQTT health checks: a PROXY v2 header (LOCAL), then a
	// CONNECT with an empty client id.
	testenv.Eventually(t, 10*time.Second, func() error {
		for _, b := range []*testenv.ProxyBroker{b1, b2} {
			checks := 0
			for _, pc := range b.Conns() {
				if pc.Local && pc.Connect && pc.ClientID == "" {
					checks++
				}
			}
			if checks < 3 {
				return fmt.Errorf("%s: %d health checks so far", b.Name, checks)
			}
		}
		return nil
	})
	for _, b := range []*testenv.ProxyBroker{b1, b2} {
		for _, pc := range b.Conns() {
			if pc.Local {
				continue
			}
			if !strings.HasPrefix(pc.ClientID, "pp-") {
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
	if len(want) != 0 || perNode["n1"] == 0 || perNode["n2"] == 0 {
		t.Fatalf("%d connects never reached a broker; per node %v", len(want), perNode)
	}
	if strings.Contains(s.haproxy.Proc.Output(), " is DOWN") {
		t.Fatalf("a broker was marked down:\n%s", s.haproxy.Proc.Output())
	}
	t.Logf("%d connects, 0 failed, each id on one node, every broker told the client's own address; per node %v", len(work), perNode)
}

// Clients keyed by their certificate (key: cert_cn, verified against
// haproxy.tls.ca): real mosquitto_pub clients with two certificates, two
// CNs, each connecting under a new client id every time, stay on one node
// per CN, and the binding is the CN's. proxy_protocol: v2-ssl-cn hands the
// CN on to the broker (the fake brokers read it from the PROXY header). A
// client without a certificate is refused by the TLS handshake.
func TestClientCertificateCNKeying(t *testing.T) {
	pub := testenv.RequireBinary(t, "mosquitto_pub")
	pki := testenv.NewPKI(t)
	b1, b2 := testenv.StartProxyBroker(t, "n1"), testenv.StartProxyBroker(t, "n2")
	spoe, api, plain, tlsAddr := testenv.FreeAddr(t), testenv.FreeAddr(t), testenv.FreeAddr(t), testenv.FreeAddr(t)
	s := startTStack(t, fmt.Sprintf(`spoe_listen: %q
api_listen: %q
store_timeout: 200ms
backends:
  - name: mqtt
    key: cert_cn
    proxy_protocol: v2-ssl-cn
    servers:
      - {name: n1, address: %q}
      - {name: n2, address: %q}
haproxy:
  bind: %q
  tls: {bind: %q, crt: %q, ca: %q}
  timeout_processing: 1s
  check_interval: 200ms
`, spoe, api, b1.Addr, b2.Addr, plain, tlsAddr, pki.Server(t), pki.CA), spoe, api, tlsAddr)

	host, port, _ := net.SplitHostPort(tlsAddr)
	publish := func(id string, cert ...string) error {
		args := []string{"-h", host, "-p", port, "--cafile", pki.CA, "-i", id, "-t", "t", "-m", "x"}
		if len(cert) == 2 {
			args = append(args, "--cert", cert[0], "--key", cert[1])
		}
		if out, err := exec.Command(pub, args...).CombinedOutput(); err != nil {
			return fmt.Errorf("mosquitto_pub -i %s: %v\n%s", id, err, out)
		}
		return nil
	}
	wc, wk := pki.Client(t, "warmup")
	s.waitAgent("warmup", func() error { return publish("warmup-client", wc, wk) })
	if err := publish("no-cert"); err == nil {
		t.Fatal("a client without a certificate connected to a listener with haproxy.tls.ca")
	}

	// Two CNs the agent places on different nodes, so both nodes are used.
	api2 := &apiClient{t: t, base: "http://" + api}
	var cns []string
	placed := map[string]bool{}
	for i := 0; len(cns) < 2 && i < 64; i++ {
		cn := fmt.Sprintf("device-%d", i)
		if code, body := api2.do("GET", "/v1/backends/mqtt/placement/"+cn, nil); code == 200 && !placed[body["server"].(string)] {
			placed[body["server"].(string)] = true
			cns = append(cns, cn)
		}
	}
	if len(cns) != 2 {
		t.Fatalf("no two CNs placed apart: %v", cns)
	}
	const connects = 6
	for _, cn := range cns {
		c, k := pki.Client(t, cn)
		for i := 0; i < connects; i++ {
			if err := publish(fmt.Sprintf("%s-id-%d-%d", cn, i, time.Now().UnixNano()), c, k); err != nil {
				t.Fatal(err)
			}
		}
	}
	nodeOf := map[string]string{}
	for _, cn := range cns {
		nodes := map[string]int{}
		for _, b := range []*testenv.ProxyBroker{b1, b2} {
			for _, pc := range b.Conns() {
				if pc.CN != cn {
					continue
				}
				if !pc.SSL || !strings.HasPrefix(pc.ClientID, cn+"-id-") {
					t.Fatalf("%s: connection %+v", b.Name, pc)
				}
				nodes[b.Name]++
			}
		}
		if len(nodes) != 1 {
			t.Fatalf("%s reached %v, want one node", cn, nodes)
		}
		for node, n := range nodes {
			nodeOf[cn] = node
			if n != connects {
				t.Fatalf("%s: %d connections with its CN on %s, want %d", cn, n, node, connects)
			}
			if b := s.binding(cn); b != node {
				t.Fatalf("binding of %s: %q, want %s", cn, b, node)
			}
		}
		if b := s.binding(cn + "-id-0"); b != "" {
			t.Fatalf("a client id got a binding (%s): the key is the CN", b)
		}
		t.Logf("%s: %d connects under %d client ids, all on %v", cn, connects, connects, nodes)
	}
	if nodeOf[cns[0]] == nodeOf[cns[1]] {
		t.Fatalf("both CNs on %s, placed apart", nodeOf[cns[0]])
	}
}

// `stickyd check-config` and `haproxy-config` name what is wrong with the
// TLS set-up before HAProxy reads it: a missing certificate, a key that is
// not the certificate's, cert_cn without client certificates.
func TestCheckConfigNamesTLSProblems(t *testing.T) {
	pki := testenv.NewPKI(t)
	good := pki.Server(t)
	dir := t.TempDir()
	otherCert, _ := pki.Client(t, "other")
	_, otherKey := pki.Client(t, "another")
	mismatch := filepath.Join(dir, "mismatch.pem")
	var pem []byte
	for _, f := range []string{otherCert, otherKey} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		pem = append(pem, b...)
	}
	if err := os.WriteFile(mismatch, pem, 0o600); err != nil {
		t.Fatal(err)
	}
	bin := testenv.StickydBinary(t)
	for _, tc := range []struct{ name, tls, key, want string }{
		{"valid", fmt.Sprintf("{bind: \"127.0.0.1:8883\", crt: %s, ca: %s}", good, pki.CA), "cert_cn", ""},
		{"missing certificate", "{bind: \"127.0.0.1:8883\", crt: " + filepath.Join(dir, "nope.pem") + "}", "client_id",
			"config: haproxy.tls.crt: open " + filepath.Join(dir, "nope.pem") + ": no such file or directory"},
		{"key of another certificate", "{bind: \"127.0.0.1:8883\", crt: " + mismatch + "}", "client_id",
			"config: haproxy.tls.crt: " + mismatch + " with the key of " + mismatch + ": tls: private key does not match public key"},
		{"cert_cn without ca", "{bind: \"127.0.0.1:8883\", crt: " + good + "}", "cert_cn",
			"config: backends[0].key: cert_cn needs haproxy.tls.ca"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := filepath.Join(t.TempDir(), "stickyd.yaml")
			y := "backends: [{name: mqtt, key: " + tc.key + ", servers: [{name: n1, address: \"[::1]:1883\"}]}]\nhaproxy: {tls: " + tc.tls + "}\n"
			if err := os.WriteFile(cfg, []byte(y), 0o600); err != nil {
				t.Fatal(err)
			}
			for _, args := range [][]string{{"check-config", "--config", cfg}, {"haproxy-config", "--config", cfg, "--out", t.TempDir()}} {
				out, err := exec.Command(bin, args...).CombinedOutput()
				if tc.want == "" {
					if err != nil {
						t.Fatalf("%s: %v\n%s", args[0], err, out)
					}
					continue
				}
				if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.HasPrefix(string(out), tc.want) {
					t.Fatalf("%s: %v, output %q; want exit 1 and %q", args[0], err, out, tc.want)
				}
			}
		})
	}
}
