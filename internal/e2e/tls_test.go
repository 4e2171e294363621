package e2e

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stickyd/stickyd/haproxy"
	"github.com/stickyd/stickyd/internal/testenv"
)

// haproxyBuild is the haproxy on PATH as `haproxy -vv` describes it.
func haproxyBuild(t *testing.T) haproxy.Build {
	t.Helper()
	testenv.RequireBinary(t, "haproxy")
	b, _, err := haproxy.DetectBuild(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// requireHAProxyTLS skips a test that needs HAProxy to terminate TLS when
// the haproxy on PATH was built without an SSL library (an upstream build
// run by hand: Debian's, which make test runs, always has one).
// haproxy-config refuses such a configuration by name for that build.
func requireHAProxyTLS(t *testing.T) {
	t.Helper()
	if b := haproxyBuild(t); !b.TLS {
		t.Skipf("HAProxy %s on PATH was built without TLS support", b.Release)
	}
}

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
	requireHAProxyTLS(t)
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

// Clients keyed by their certificate (key: cert_cn, verified against
// haproxy.tls.ca): real mosquitto_pub clients with two certificates, two
// CNs, each connecting under a new client id every time, stay on one node
// per CN, and the binding is the CN's. proxy_protocol: v2-ssl-cn hands the
// CN on to the broker (the fake brokers read it from the PROXY header). A
// client without a certificate is refused by the TLS handshake.
func TestClientCertificateCNKeying(t *testing.T) {
	requireHAProxyTLS(t)
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

	cns := placedApart(t, api, "device-")
	const connects = 6
	var usedIDs []string
	for _, cn := range cns {
		c, k := pki.Client(t, cn)
		for i := 0; i < connects; i++ {
			id := fmt.Sprintf("%s-id-%d-%d", cn, i, time.Now().UnixNano())
			usedIDs = append(usedIDs, id)
			if err := publish(id, c, k); err != nil {
				t.Fatal(err)
			}
		}
	}
	nodeOf := map[string]string{}
	for _, cn := range cns {
		nodes := cnNodes(t, []*testenv.ProxyBroker{b1, b2}, cn)
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
		t.Logf("%s: %d connects under %d client ids, all on %v", cn, connects, connects, nodes)
	}
	if nodeOf[cns[0]] == nodeOf[cns[1]] {
		t.Fatalf("both CNs on %s, placed apart", nodeOf[cns[0]])
	}
	for _, id := range usedIDs {
		if b := s.binding(id); b != "" {
			t.Fatalf("client id %s got a binding (%s): the key is the CN", id, b)
		}
	}
}

// placedApart returns two keys with prefix that the agent would place on
// different servers (GET placement), so a test uses both nodes.
func placedApart(t *testing.T, apiAddr, prefix string) []string {
	t.Helper()
	api := &apiClient{t: t, base: "http://" + apiAddr}
	var keys []string
	seen := map[string]bool{}
	for i := 0; len(keys) < 2 && i < 64; i++ {
		key := fmt.Sprintf("%s%d", prefix, i)
		code, body := api.do("GET", "/v1/backends/mqtt/placement/"+key, nil)
		if srv, _ := body["server"].(string); code == 200 && srv != "" && !seen[srv] {
			seen[srv] = true
			keys = append(keys, key)
		}
	}
	if len(keys) != 2 {
		t.Fatalf("no two keys placed apart: %v", keys)
	}
	return keys
}

// cnNodes counts, per broker, the client connections whose PROXY v2-ssl-cn
// header carried cn; each must have come over TLS under a client id of its
// own (cn-id-...).
func cnNodes(t *testing.T, brokers []*testenv.ProxyBroker, cn string) map[string]int {
	t.Helper()
	nodes := map[string]int{}
	for _, b := range brokers {
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
	return nodes
}

// `stickyd check-config` and `haproxy-config` name what is wrong with the
// TLS set-up before HAProxy reads it: a missing certificate, a key that is
// not the certificate's, cert_cn without client certificates. (For a fixed
// line: the haproxy on PATH may be a build without TLS.)
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
			for _, args := range [][]string{{"check-config", "--config", cfg}, {"haproxy-config", "--config", cfg, "--out", t.TempDir(), "--haproxy-version", "2.6"}} {
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
