package haproxy

import (
	"strings"
	"testing"

	"github.com/stickyd/stickyd/config"
)

func TestTableKey(t *testing.T) {
	// sha1("abc") = a9993e364706816aba3e25717850c26c9cd0d89d
	if got, want := TableKey([]byte("abc")), "A9993E364706816ABA3E25717850C26C"; got != want {
		t.Fatalf("TableKey(abc) = %s, want %s", got, want)
	}
	long := strings.Repeat("x", 65535)
	if a, b := TableKey([]byte(long)), TableKey([]byte(long[:65534]+"y")); len(a) != 32 || a == b {
		t.Fatalf("long ids: %s %s", a, b)
	}
}

func localCfg(t *testing.T, extra string) config.Config {
	t.Helper()
	cfg, err := config.Parse(strings.NewReader(`
backends:
  - name: mqtt
    servers:
      - {name: n1, address: 127.0.0.1:1884}
      - {name: n2, address: 127.0.0.1:1885}
`+extra), nil)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestLocalTableRules(t *testing.T) {
	cases := []struct {
		name, extra string
		want, not   []string
	}{
		{"default window", "", []string{
			"tcp-request content set-var(sess.stickyd.local) str(n2) if { var(sess.stickyd.tsid) -m int eq 2 } { var(sess.stickyd.tidle) -m int lt 10000 } { srv_is_up(mqtt/n2) }",
			"stick-table type string len 32 size 1000000 expire 1800000ms",
			"send-spoe-group stickyd grp_mqtt if { var(sess.stickyd.key) -m found } !{ var(sess.stickyd.local) -m found } { nbsrv(stickyd_agents) gt 0 }",
		}, nil},
		{"capped at half the ttl", "ttl: 6s\nhaproxy:\n  local_fresh: 1h\n", []string{"-m int lt 3000 }", "expire 6000ms"}, nil},
		{"fast path off", "haproxy:\n  local_fresh: 0s\n", []string{
			// The table still answers while the agent is down.
			"set-var(sess.stickyd.local) str(n1) if !{ var(sess.stickyd.local) -m found } !{ var(sess.stickyd.server) -m found } { var(sess.stickyd.tsid) -m int eq 1 } { srv_is_up(mqtt/n1) }",
		}, []string{"table_idle"}},
		{"no expiry", "ttl: 0s\n", []string{"expire 2073600000ms"}, nil},
		{"no local peer", "", nil, []string{"peers", "localpeer"}},
		{"local peer", "haproxy:\n  local_peer: 127.0.0.1:10011\n  stats_socket: /run/stickyd-haproxy.sock\n", []string{
			"\n    localpeer stickyd_942fee53cd38\n",
			"\npeers stickyd_peers\n    peer stickyd_942fee53cd38 127.0.0.1:10011\n",
			// The table of answers and the fallback's choices; not the
			// connected clients' (conn_cur is never learned from peers).
			"stick-table type string len 32 size 1000000 expire 1800000ms peers stickyd_peers\n    stick store-request var(sess.stickyd.hkey) if { var(sess.stickyd.server) -m found }",
			"stick-table type string len 32 size 1000000 expire 1800000ms peers stickyd_peers\n    stick store-request var(sess.stickyd.hkey) if { var(sess.stickyd.hkey) -m found }",
			"expire 10s store conn_cur\n",
		}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := localCfg(t, c.extra)
			main, _, err := Generate(&cfg, "/x/s.conf", GenOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range c.want {
				if !strings.Contains(string(main), w) {
					t.Errorf("missing %q in:\n%s", w, main)
				}
			}
			for _, w := range c.not {
				if strings.Contains(string(main), w) {
					t.Errorf("unexpected %q", w)
				}
			}
		})
	}
}

// The local peer's name changes with what an entry means (the servers in
// order, hence their ids; the backends), not with what does not (weights,
// addresses, the peer's own address): HAProxy hands the tables over only
// between processes whose local peer names match.
func TestLocalPeerNameFollowsServerIDs(t *testing.T) {
	name := func(y string) string {
		t.Helper()
		cfg, err := config.Parse(strings.NewReader(y), nil)
		if err != nil {
			t.Fatal(err)
		}
		return (&genData{Cfg: &cfg, Backends: cfg.Backends}).LocalPeerName()
	}
	const base = "backends: [{name: mqtt, servers: [{name: n1, address: '127.0.0.1:1884'}, {name: n2, address: '127.0.0.1:1885'}]}]\n"
	want := name(base)
	if !strings.HasPrefix(want, "stickyd_") || len(want) != len("stickyd_")+12 {
		t.Fatalf("name %q", want)
	}
	for _, tc := range []struct {
		name, yaml string
		same       bool
	}{
		{"same", base, true},
		{"weights and addresses", "backends: [{name: mqtt, servers: [{name: n1, address: '10.0.0.1:1883', weight: 3}, {name: n2, address: '10.0.0.2:1883'}]}]\nhaproxy: {local_peer: '127.0.0.1:10012'}\n", true},
		{"servers reordered", "backends: [{name: mqtt, servers: [{name: n2, address: '127.0.0.1:1885'}, {name: n1, address: '127.0.0.1:1884'}]}]\n", false},
		{"server removed", "backends: [{name: mqtt, servers: [{name: n2, address: '127.0.0.1:1885'}]}]\n", false},
		{"server added", "backends: [{name: mqtt, servers: [{name: n1, address: '127.0.0.1:1884'}, {name: n2, address: '127.0.0.1:1885'}, {name: n3, address: '127.0.0.1:1886'}]}]\n", false},
		{"backend renamed", "backends: [{name: mqtt2, servers: [{name: n1, address: '127.0.0.1:1884'}, {name: n2, address: '127.0.0.1:1885'}]}]\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := name(tc.yaml); (got == want) != tc.same {
				t.Fatalf("%s vs %s: same = %v, want %v", got, want, got == want, tc.same)
			}
		})
	}
}
