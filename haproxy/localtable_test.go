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
			"\n    localpeer stickyd_local\n",
			"\npeers stickyd_peers\n    peer stickyd_local 127.0.0.1:10011\n",
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
