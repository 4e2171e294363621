package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// haproxy-config picks its HAProxy line: the flag, else `haproxy -vv` of
// the haproxy on PATH, else 2.6; and says which. A configuration that
// needs TLS from an haproxy on PATH built without it is refused.
func TestHAProxyConfigTargetVersion(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "stickyd.yaml")
	if err := os.WriteFile(cfg, []byte("backends: [{name: mqtt, servers: [{name: n1, address: 127.0.0.1:1883}]}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tlsCfg := filepath.Join(dir, "tls.yaml")
	if err := os.WriteFile(tlsCfg, []byte("backends: [{name: mqtt, servers: [{name: n1, address: 127.0.0.1:1883}], proxy_protocol: v2-ssl}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Stand-ins that only answer -vv, as an haproxy 3.0 with OpenSSL and a
	// 2.4 without would.
	fake := fakeHAProxy(t, filepath.Join(dir, "bin"), "HAProxy version 3.0.11-1+deb13u4 2025/10/03 - https://haproxy.org/", "+EPOLL +OPENSSL +SSL")
	noTLS := fakeHAProxy(t, filepath.Join(dir, "notls"), "HAProxy version 2.4.0-6cbbecf09 2021/05/14 - https://haproxy.org/", "+EPOLL -OPENSSL -LUA")
	for _, tc := range []struct {
		name, path, cfg string
		args            []string
		code            int
		say, spop       string // stdout (or stderr) part; "mode spop" present?
	}{
		{"flag", "", cfg, []string{"--haproxy-version", "3.2"}, 0, "for HAProxy 3.2 (--haproxy-version)", "yes"},
		{"flag wins over PATH", fake, cfg, []string{"--haproxy-version", "2.4"}, 0, "for HAProxy 2.4 (--haproxy-version)", "no"},
		{"haproxy -vv", fake, cfg, nil, 0, "for HAProxy 3.0 (haproxy -vv)", "no"},
		{"default", dir, cfg, nil, 0, "for HAProxy 2.6 (default; no haproxy on PATH)", "no"},
		{"too old", "", cfg, []string{"--haproxy-version", "2.2"}, 1, "unsupported HAProxy version: 2.2 (supported: 2.4 to 3.4)", ""},
		{"not a version", "", cfg, []string{"--haproxy-version", "latest"}, 1, `HAProxy version "latest"`, ""},
		{"no TLS, none needed", noTLS, cfg, nil, 0, "for HAProxy 2.4 (haproxy -vv)", "no"},
		{"no TLS, TLS needed", noTLS, tlsCfg, nil, 1, "the haproxy on PATH (2.4): backends[0].proxy_protocol v2-ssl: HAProxy built without TLS support (haproxy -vv lists no SSL library)", ""},
		{"TLS needed and built in", fake, tlsCfg, nil, 0, "for HAProxy 3.0 (haproxy -vv)", "no"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("PATH", tc.path)
			out := filepath.Join(t.TempDir(), "gen")
			var stdout, stderr bytes.Buffer
			args := append([]string{"haproxy-config", "--config", tc.cfg, "--out", out}, tc.args...)
			if code := run(args, &stdout, &stderr); code != tc.code {
				t.Fatalf("exit %d, want %d; stderr %s", code, tc.code, stderr.String())
			}
			if !strings.Contains(stdout.String()+stderr.String(), tc.say) {
				t.Fatalf("output %q %q, want %q", stdout.String(), stderr.String(), tc.say)
			}
			if tc.spop == "" {
				return
			}
			b, err := os.ReadFile(filepath.Join(out, "haproxy.cfg"))
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Contains(string(b), "mode spop"); got != (tc.spop == "yes") {
				t.Errorf("mode spop in the configuration: %v", got)
			}
		})
	}
}

// fakeHAProxy writes an haproxy that prints first and a feature list for
// -vv, as a real one does, and returns its directory.
func fakeHAProxy(t *testing.T, dir, first, features string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	script := "#!/bin/sh\necho '" + first + "'\necho 'Build options :'\necho 'Feature list : " + features + "'\n"
	if err := os.WriteFile(filepath.Join(dir, "haproxy"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}
