package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeTokenConfig writes a config whose token is in a file of the given
// mode; spoe_listen is an address already taken, so serve stops right
// after its start-up checks.
func writeTokenConfig(t *testing.T, token string, mode os.FileMode) string {
	t.Helper()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { busy.Close() })
	dir := t.TempDir()
	tok := filepath.Join(dir, "api-token")
	if err := os.WriteFile(tok, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(tok, mode); err != nil {
		t.Fatal(err)
	}
	cfg := "spoe_listen: " + busy.Addr().String() + "\napi_listen: 127.0.0.1:0\napi_token_file: " + tok + `
backends:
  - name: mqtt
    servers:
      - {name: n1, address: 127.0.0.1:1883}
`
	p := filepath.Join(dir, "stickyd.yaml")
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestTokenFileChecks: check-config and serve warn about a token file
// others may read, and both refuse a token shorter than 16 bytes.
func TestTokenFileChecks(t *testing.T) {
	const tok = "serve-token-0123456789"
	for _, tc := range []struct {
		mode os.FileMode
		warn bool
	}{{0o600, false}, {0o644, true}, {0o640, true}} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			p := writeTokenConfig(t, tok, tc.mode)
			var out, errb bytes.Buffer
			if code := checkConfig(p, &out, &errb); code != 0 {
				t.Fatalf("check-config: %d %s", code, errb.String())
			}
			if got := strings.Contains(errb.String(), "warning: api_token_file "); got != tc.warn {
				t.Errorf("check-config warning %v, want %v: %q", got, tc.warn, errb.String())
			}
			errb.Reset()
			if code := serve(p, &errb); code != 1 { // the SPOE address is taken
				t.Fatalf("serve: %d %s", code, errb.String())
			}
			logs := errb.String()
			if got := strings.Contains(logs, "level=WARN msg=\"api_token_file is readable or writable by group or others"); got != tc.warn {
				t.Errorf("serve warning %v, want %v:\n%s", got, tc.warn, logs)
			}
			if m := fmt.Sprintf("mode=%04o", tc.mode); tc.warn && !strings.Contains(logs, m) {
				t.Errorf("serve warning without %s:\n%s", m, logs)
			}
			if strings.Contains(logs+out.String(), tok) {
				t.Error("the token is in the output")
			}
		})
	}
	t.Run("short", func(t *testing.T) {
		p := writeTokenConfig(t, "short-token", 0o600)
		for name, run := range map[string]func(*bytes.Buffer) int{
			"check-config": func(b *bytes.Buffer) int { return checkConfig(p, b, b) },
			"serve":        func(b *bytes.Buffer) int { return serve(p, b) },
		} {
			var b bytes.Buffer
			if code := run(&b); code != 1 || !strings.Contains(b.String(), "api_token_file: the token is 11 bytes, want at least 16") {
				t.Errorf("%s: exit %d, %q", name, code, b.String())
			}
		}
	})
}
