package haproxy

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stickyd/stickyd/config"
	"github.com/stickyd/stickyd/internal/testenv"
)

func TestParseVersion(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Version
	}{
		{"2.6", Version{2, 6}},
		{"3.0.11", Version{3, 0}},
		{"3.0.11-1+deb13u4", Version{3, 0}},
		{"HAProxy version 2.6.12-1+deb12u4 2025/04/23 - https://haproxy.org/\nStatus: long-term supported branch", Version{2, 6}},
		{"HAProxy version 3.4.0-64a335366 2026/05/27 - https://haproxy.org/", Version{3, 4}},
		{"HA-Proxy version 2.4.0 2021/05/14 - https://haproxy.org/", Version{2, 4}},
	} {
		if got, err := ParseVersion(tc.in); err != nil || got != tc.want {
			t.Errorf("ParseVersion(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "two.six", "3"} {
		if v, err := ParseVersion(bad); err == nil {
			t.Errorf("ParseVersion(%q) = %v, want an error", bad, v)
		}
	}
}

func TestVersionCheck(t *testing.T) {
	if _, err := (Version{2, 2}).Check(); !errors.Is(err, ErrUnsupportedVersion) {
		t.Errorf("2.2: %v, want ErrUnsupportedVersion", err)
	}
	if v, err := (Version{3, 6}).Check(); err != nil || v != MaxVersion {
		t.Errorf("3.6: %v, %v; want %v", v, err, MaxVersion)
	}
	if v, err := (Version{3, 1}).Check(); err != nil || v != (Version{3, 1}) {
		t.Errorf("3.1: %v, %v", v, err)
	}
}

func versionCfg(t *testing.T) config.Config {
	t.Helper()
	cfg, err := config.Parse(strings.NewReader(`
backends:
  - name: mqtt
    servers:
      - {name: n1, address: 127.0.0.1:1883, weight: 1}
      - {name: n2, address: 127.0.0.1:1884, weight: 3}
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// What each line gets: 3.1+ runs SPOE on the SPOP multiplexer (mode spop,
// no hello/idle timeouts, no maxerrrate); no line gets balance hash (2.4
// rejects it) now that fail-open placement is computed in rules.
func TestGenerateForEachVersion(t *testing.T) {
	cfg := versionCfg(t)
	for _, v := range []Version{{2, 4}, {2, 5}, {2, 6}, {2, 8}, {3, 0}, {3, 1}, {3, 2}, {3, 3}, {3, 4}} {
		t.Run(v.String(), func(t *testing.T) {
			m, s, err := Generate(&cfg, "/x/stickyd.spoe.conf", GenOptions{Version: v})
			if err != nil {
				t.Fatal(err)
			}
			main, spoe := string(m), string(s)
			mux := v.AtLeast(Version{3, 1})
			for word, want := range map[string]bool{"mode spop": mux, "    mode tcp\n    balance roundrobin": !mux} {
				if strings.Contains(main, word) != want {
					t.Errorf("haproxy.cfg has %q: %v, want %v", word, !want, want)
				}
			}
			for _, word := range []string{"timeout hello", "timeout idle", "maxerrrate"} {
				if strings.Contains(spoe, word) == mux {
					t.Errorf("SPOE file for %s has %q: %v", v, word, !mux)
				}
			}
			for _, word := range []string{"option async", "balance hash", "hash-type"} {
				if strings.Contains(main+spoe, word) {
					t.Errorf("%q in the configuration for %s", word, v)
				}
			}
			if strings.Contains(main, "table_idle") != v.AtLeast(Version{2, 6}) {
				t.Errorf("table_idle (the table's fast path) for %s: %v", v, !v.AtLeast(Version{2, 6}))
			}
			if !strings.Contains(main, "for HAProxy "+v.String()+" ") {
				t.Errorf("header does not name HAProxy %s", v)
			}
			if n := strings.Count(main, ",xxh32("); n != 4 {
				t.Errorf("%d xxh32 draws, want 4 (weights 1 and 3)", n)
			}
		})
	}
	if _, _, err := Generate(&cfg, "/x", GenOptions{Version: Version{2, 2}}); !errors.Is(err, ErrUnsupportedVersion) {
		t.Errorf("2.2: %v", err)
	}
}

// The haproxy on PATH accepts the configuration written for its own line
// with no warning (no deprecated keyword left), and DetectBuild reads it.
func TestGeneratedConfigValidOnHAProxyOnPath(t *testing.T) {
	bin := testenv.RequireBinary(t, "haproxy")
	v := buildOnPath(t).Version
	cfg := versionCfg(t)
	// Every optional section too: the Runtime API (table of connected
	// clients) and the local peer.
	cfg.HAProxy.StatsSocket = filepath.Join(t.TempDir(), "admin.sock")
	cfg.HAProxy.LocalPeer = testenv.FreeAddr(t)
	dir := t.TempDir()
	if err := WriteConfig(&cfg, dir, GenOptions{Version: v, LogConnections: true}); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "-c", "-f", filepath.Join(dir, ConfigFile)).CombinedOutput()
	if err != nil {
		t.Fatalf("%s -c (HAProxy %s): %v\n%s", bin, v, err, out)
	}
	if strings.Contains(string(out), "WARNING") || strings.Contains(string(out), "ALERT") {
		t.Fatalf("%s -c (HAProxy %s) warns:\n%s", bin, v, out)
	}
	t.Logf("%s: HAProxy %s configuration valid, no warnings", bin, v)
}

// buildOnPath is the haproxy on PATH, its line within the supported range:
// tests that run `haproxy -c` write for it.
func buildOnPath(t *testing.T) Build {
	t.Helper()
	testenv.RequireBinary(t, "haproxy")
	b, ok, err := DetectBuild(context.Background())
	if err != nil || !ok {
		t.Fatalf("DetectBuild: %+v, %v, %v", b, ok, err)
	}
	if b.Version, err = b.Version.Check(); err != nil {
		t.Fatal(err)
	}
	return b
}

// `haproxy -vv` as printed by builds with and without an SSL library.
func TestParseBuild(t *testing.T) {
	for _, tc := range []struct {
		name, out string
		want      Build
	}{
		{"2.6 Debian", "HAProxy version 2.6.12-1+deb12u4 2025/04/23 - https://haproxy.org/\nStatus: long-term supported branch\nBuild options :\n  TARGET  = linux-glibc\n\nFeature list : +EPOLL -KQUEUE +OPENSSL +LUA\n", Build{Version{2, 6}, "2.6.12-1+deb12u4", true}},
		{"2.4 without OpenSSL", "HAProxy version 2.4.0-6cbbecf09 2021/05/14 - https://haproxy.org/\nFeature list : +EPOLL -KQUEUE -OPENSSL -LUA +FUTEX\n", Build{Version{2, 4}, "2.4.0-6cbbecf09", false}},
		{"3.1 wolfSSL", "HAProxy version 3.1.0-f2b97918e 2024/11/26 - https://haproxy.org/\nFeature list : -51DEGREES -OPENSSL +OPENSSL_WOLFSSL +SSL\n", Build{Version{3, 1}, "3.1.0-f2b97918e", true}},
		{"3.4 without SSL", "HAProxy version 3.4.0 2026/05/28 - https://haproxy.org/\nFeature list : -OPENSSL -OPENSSL_AWSLC -OPENSSL_WOLFSSL -SSL\n", Build{Version{3, 4}, "3.4.0", false}},
		{"no feature list", "HAProxy version 3.0.11 2025/06/02\n", Build{Version{3, 0}, "3.0.11", false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseBuild(tc.out)
			if err != nil || got != tc.want {
				t.Fatalf("ParseBuild = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
	if _, err := ParseBuild("haproxy: not a version\n"); err == nil {
		t.Fatal("ParseBuild accepted output without a version")
	}
}

// A configuration that needs TLS is refused for a build without it, naming
// the setting; one that does not is accepted.
func TestBuildCheckConfig(t *testing.T) {
	base := "%sbackends: [{name: mqtt, servers: [{name: n1, address: 127.0.0.1:1883}]%s}, {name: b2, servers: [{name: m1, address: 127.0.0.1:1884}]%s}]\n"
	const crt = "haproxy: {tls: {crt: /etc/stickyd/server.pem}}\n"
	for _, tc := range []struct{ name, haproxy, be1, be2, want string }{
		{"plain", "", "", "", ""},
		{"haproxy.tls.bind", "haproxy: {tls: {bind: '127.0.0.1:8883', crt: /etc/stickyd/server.pem}}\n", "", "", "haproxy.tls.bind"},
		{"tls_bind", crt, "", ", tls_bind: '127.0.0.1:8884'", "backends[1].tls_bind"},
		{"v2-ssl", "", ", proxy_protocol: v2-ssl", "", "backends[0].proxy_protocol v2-ssl"},
		{"v1", "", ", proxy_protocol: v1", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := parse(t, fmt.Sprintf(base, tc.haproxy, tc.be1, tc.be2))
			if err := (Build{Version: Version{3, 0}, TLS: true}).CheckConfig(&cfg); err != nil {
				t.Fatalf("TLS build: %v", err)
			}
			err := Build{Version: Version{2, 4}}.CheckConfig(&cfg)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("no TLS needed: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrNoTLS) || !strings.HasPrefix(err.Error(), tc.want+": ") {
				t.Fatalf("got %v, want %s: %v", err, tc.want, ErrNoTLS)
			}
		})
	}
}
