package haproxy

import (
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stickyd/stickyd/config"
	"github.com/stickyd/stickyd/internal/testenv"
)

func parse(t *testing.T, y string) config.Config {
	t.Helper()
	cfg, err := config.Parse(strings.NewReader(y), nil)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// transportYAML has every transport option, and IPv6 in every address:
// binds, TLS binds, servers and agents.
func transportYAML(crt, ca string) string {
	return `
spoe_listen: "[::1]:12345"
backends:
  - name: mqtt
    proxy_protocol: v2
    servers:
      - {name: n1, address: "[::1]:1883"}
      - {name: n2, address: "127.0.0.1:1884"}
  - name: devices
    key: cert_cn
    bind: "[::1]:2883"
    tls_bind: "[::]:2884"
    proxy_protocol: v2-ssl-cn
    health_check: tcp
    servers:
      - {name: d1, address: "[2001:db8::1]:1883"}
  - name: legacy
    bind: "127.0.0.1:3883"
    proxy_protocol: v1
    servers:
      - {name: l1, address: "127.0.0.1:1885"}
haproxy:
  bind: "[::1]:1883"
  accept_proxy: true
  tls:
    bind: "[::1]:8883"
    crt: ` + crt + `
    ca: ` + ca + `
`
}

func lines(s string) map[string]bool {
	out := map[string]bool{}
	for _, l := range strings.Split(s, "\n") {
		out[strings.TrimSpace(l)] = true
	}
	return out
}

func TestTransportLines(t *testing.T) {
	cfg := parse(t, transportYAML("/etc/stickyd/tls/server.pem", "/etc/stickyd/tls/ca.pem"))
	main, spoe, err := Generate(&cfg, "/x/stickyd.spoe.conf", GenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := lines(string(main))
	for _, want := range []string{
		"bind [::1]:1883 accept-proxy",
		"bind [::1]:8883 ssl crt /etc/stickyd/tls/server.pem ca-file /etc/stickyd/tls/ca.pem verify required accept-proxy",
		"bind [::1]:2883 accept-proxy",
		"bind [::]:2884 ssl crt /etc/stickyd/tls/server.pem ca-file /etc/stickyd/tls/ca.pem verify required accept-proxy",
		"bind 127.0.0.1:3883 accept-proxy",
		"tcp-request content set-var(sess.stickyd.cn) ssl_c_s_dn(cn)",
		"tcp-request content set-var(sess.stickyd.key) var(sess.stickyd.cn)",
		"tcp-request content set-var(sess.stickyd.key) var(sess.stickyd.cid)",
		"server n1 [::1]:1883 check inter 2000ms rise 2 fall 2 weight 1 id 1 send-proxy-v2 check-send-proxy",
		"server n1 [::1]:1883 track mqtt/n1 weight 1 id 1 send-proxy-v2",
		"server n2 127.0.0.1:1884 check inter 2000ms rise 2 fall 2 weight 1 id 2 send-proxy-v2 check-send-proxy",
		"server d1 [2001:db8::1]:1883 check inter 2000ms rise 2 fall 2 weight 1 id 1 send-proxy-v2-ssl-cn check-send-proxy",
		"server d1 [2001:db8::1]:1883 track devices/d1 weight 1 id 1 send-proxy-v2-ssl-cn",
		"server l1 127.0.0.1:1885 check inter 2000ms rise 2 fall 2 weight 1 id 1 send-proxy check-send-proxy",
		"server agent1 [::1]:12345 check inter 1s rise 1 fall 2",
		"timeout check 2000ms",
		"tcp-check connect default linger",
		"tcp-check send-binary 100c00044d5154540402000a0000 comment MQTT-CONNECT",
		"tcp-check expect comment MQTT-CONNACK rbinary ^2002",
		"tcp-check send-binary e000 comment MQTT-DISCONNECT",
	} {
		if !got[want] {
			t.Errorf("no line %q in:\n%s", want, main)
		}
	}
	// MQTT checks on mqtt and legacy, none on devices (health_check: tcp).
	if n := strings.Count(string(main), "option tcp-check"); n != 2 {
		t.Errorf("%d MQTT health checks, want 2:\n%s", n, main)
	}
	_, devices, _ := strings.Cut(string(main), "backend devices\n")
	devices, _, _ = strings.Cut(devices, "\nbackend ")
	if strings.Contains(devices, "tcp-check") {
		t.Errorf("health_check: tcp backend has tcp-check rules:\n%s", devices)
	}
	if strings.Count(string(main), "set-var(sess.stickyd.cn)") != 1 {
		t.Errorf("the CN is read outside the cert_cn backend:\n%s", main)
	}
	s := string(spoe)
	if !strings.Contains(s, "args backend=str(devices) client_id=var(sess.stickyd.cid) username=var(sess.stickyd.user) session_expiry=var(sess.stickyd.sexp) seen=var(sess.stickyd.seen) cert_cn=var(sess.stickyd.cn) up_d1=srv_is_up(devices/d1)\n") {
		t.Errorf("cert_cn backend's message lacks the CN:\n%s", s)
	}
	if strings.Count(s, "cert_cn=") != 1 {
		t.Errorf("cert_cn sent for a backend that does not key by it:\n%s", s)
	}
}

// Without the transport options the generated lines are the plain ones.
func TestTransportDefaults(t *testing.T) {
	cfg := parse(t, "backends: [{name: mqtt, servers: [{name: n1, address: '127.0.0.1:1883'}]}]\n")
	main, _, err := Generate(&cfg, "/x/stickyd.spoe.conf", GenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s := string(main)
	for _, word := range []string{"ssl", "send-proxy", "accept-proxy", "ca-file", "ssl_c_s_dn"} {
		if strings.Contains(s, word) {
			t.Errorf("%q without any transport option:\n%s", word, s)
		}
	}
	if !strings.Contains(s, "\n    bind 127.0.0.1:1883\n") || strings.Count(s, "option tcp-check") != 1 {
		t.Errorf("want one plain bind and the MQTT health check by default:\n%s", s)
	}
}

// The haproxy on PATH accepts the whole transport configuration,
// certificates included (made by openssl), IPv6 addresses in every field;
// a build without TLS support is refused it by name before HAProxy is.
func TestTransportConfigPassesHAProxyCheck(t *testing.T) {
	bin := testenv.RequireBinary(t, "haproxy")
	pki := testenv.NewPKI(t)
	cfg := parse(t, transportYAML(pki.Server(t), pki.CA))
	if err := cfg.CheckTLSFiles(); err != nil {
		t.Fatal(err)
	}
	b := buildOnPath(t)
	if !b.TLS {
		if err := b.CheckConfig(&cfg); !errors.Is(err, ErrNoTLS) {
			t.Fatalf("HAProxy %s without TLS: CheckConfig = %v, want %v", b.Version, err, ErrNoTLS)
		}
		t.Skipf("%s: HAProxy %s built without TLS support: refused by CheckConfig, not run", bin, b.Version)
	}
	dir := t.TempDir()
	if err := WriteConfig(&cfg, dir, GenOptions{Version: b.Version}); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "-c", "-f", filepath.Join(dir, ConfigFile)).CombinedOutput()
	if err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "WARNING") {
		t.Errorf("haproxy -c warns:\n%s", out)
	}
}
