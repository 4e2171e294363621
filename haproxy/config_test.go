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

// resolverCfg has a broker and an agent whose names never resolve (.invalid,
// RFC 6761): the situation of a container or pod that is not started yet.
func resolverCfg(t *testing.T, resolvers string) config.Config {
	t.Helper()
	y := `
backends:
  - name: mqtt
    servers:
      - {name: n1, address: n1.invalid:1883}
      - {name: n2, address: 127.0.0.1:1884}
haproxy:
  agents: ["stickyd.invalid:12345", "127.0.0.1:12345"]
` + resolvers
	cfg, err := config.Parse(strings.NewReader(y), nil)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestResolversOffByDefault(t *testing.T) {
	cfg := resolverCfg(t, "")
	main, _, err := Generate(&cfg, "/x/stickyd.spoe.conf", GenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, word := range []string{"resolvers", "init-addr", "nameserver", "parse-resolv-conf"} {
		if strings.Contains(string(main), word) {
			t.Errorf("%q in a configuration without haproxy.resolvers:\n%s", word, main)
		}
	}
}

func TestResolversSection(t *testing.T) {
	cfg := resolverCfg(t, `  resolvers: ["127.0.0.11:53", "resolv.conf", "[::1]:5353"]`)
	main, _, err := Generate(&cfg, "/x/stickyd.spoe.conf", GenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s := string(main)
	want := "\nresolvers stickyd_dns\n    nameserver dns1 127.0.0.11:53\n    parse-resolv-conf\n    nameserver dns3 [::1]:5353\n\ndefaults\n"
	if !strings.Contains(s, want) {
		t.Errorf("no resolvers section %q in:\n%s", want, s)
	}
	servers := 0
	for _, line := range strings.Split(s, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "server ") {
			continue
		}
		servers++
		if !strings.HasSuffix(line, " resolvers stickyd_dns init-addr last,libc,none") {
			t.Errorf("server line without run-time resolution: %q", line)
		}
	}
	if servers != 6 { // 2 brokers, 2 fallback, 2 agents
		t.Errorf("%d server lines, want 6:\n%s", servers, s)
	}
}

// The point of the option: HAProxy refuses a hostname it cannot resolve at
// startup, and accepts it (server down until the name resolves) with it.
func TestResolversLetHAProxyStartWithUnresolvableNames(t *testing.T) {
	bin := testenv.RequireBinary(t, "haproxy")
	v := buildOnPath(t).Version
	check := func(cfg config.Config) (string, error) {
		dir := t.TempDir()
		if err := WriteConfig(&cfg, dir, GenOptions{Version: v}); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(bin, "-c", "-f", filepath.Join(dir, ConfigFile)).CombinedOutput()
		return string(out), err
	}
	if out, err := check(resolverCfg(t, "")); err == nil {
		t.Errorf("haproxy -c accepted n1.invalid without resolvers:\n%s", out)
	}
	if out, err := check(resolverCfg(t, `  resolvers: ["127.0.0.11:53", "resolv.conf"]`)); err != nil {
		t.Errorf("haproxy -c with resolvers: %v\n%s", err, out)
	}
}

func TestResolversValidation(t *testing.T) {
	for _, tc := range []struct{ resolvers, key string }{
		{`["127.0.0.11"]`, "haproxy.resolvers[0]"},
		{`["kube-dns:53"]`, "haproxy.resolvers[0]"},
		{`["127.0.0.11:0"]`, "haproxy.resolvers[0]"},
		{`["127.0.0.11:53", "127.0.0.11:53"]`, "haproxy.resolvers[1]"},
		{`["resolv.conf", "/etc/resolv.conf"]`, "haproxy.resolvers[1]"},
	} {
		y := "backends: [{name: mqtt, servers: [{name: n1, address: n1:1883}]}]\nhaproxy: {resolvers: " + tc.resolvers + "}\n"
		_, err := config.Parse(strings.NewReader(y), nil)
		var ce *config.Error
		if !errors.As(err, &ce) || ce.Key != tc.key {
			t.Errorf("resolvers %s: got %v, want an error naming %s", tc.resolvers, err, tc.key)
		}
	}
	env := map[string]string{"STICKYD_HAPROXY_RESOLVERS": "127.0.0.11:53, resolv.conf"}
	cfg, err := config.Parse(strings.NewReader("backends: [{name: mqtt, servers: [{name: n1, address: n1:1883}]}]\n"),
		func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(cfg.HAProxy.Resolvers, "|"); got != "127.0.0.11:53|resolv.conf" {
		t.Errorf("from STICKYD_HAPROXY_RESOLVERS: %q", got)
	}
}
