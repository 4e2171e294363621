package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// haproxy-config picks its HAProxy line: the flag, else `haproxy -v` of
// the haproxy on PATH, else 2.6; and says which.
func TestHAProxyConfigTargetVersion(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "stickyd.yaml")
	if err := os.WriteFile(cfg, []byte("backends: [{name: mqtt, servers: [{name: n1, address: 127.0.0.1:1883}]}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A stand-in that only answers -v, as an haproxy 3.0 would.
	fake := filepath.Join(dir, "bin")
	if err := os.MkdirAll(fake, 0o755); err != nil {
		t.Fatal(err)
	}
	script := "#!/bin/sh\necho 'HAProxy version 3.0.11-1+deb13u4 2025/10/03 - https://haproxy.org/'\n"
	if err := os.WriteFile(filepath.Join(fake, "haproxy"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path string
		args       []string
		code       int
		say, spop  string // stdout (or stderr) part; "mode spop" present?
	}{
		{"flag", "", []string{"--haproxy-version", "3.2"}, 0, "for HAProxy 3.2 (--haproxy-version)", "yes"},
		{"flag wins over PATH", fake, []string{"--haproxy-version", "2.4"}, 0, "for HAProxy 2.4 (--haproxy-version)", "no"},
		{"haproxy -v", fake, nil, 0, "for HAProxy 3.0 (haproxy -v)", "no"},
		{"default", dir, nil, 0, "for HAProxy 2.6 (default; no haproxy on PATH)", "no"},
		{"too old", "", []string{"--haproxy-version", "2.2"}, 1, "unsupported HAProxy version: 2.2 (supported: 2.4 to 3.4)", ""},
		{"not a version", "", []string{"--haproxy-version", "latest"}, 1, `HAProxy version "latest"`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("PATH", tc.path)
			out := filepath.Join(t.TempDir(), "gen")
			var stdout, stderr bytes.Buffer
			args := append([]string{"haproxy-config", "--config", cfg, "--out", out}, tc.args...)
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
