package config

import (
	"bytes"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// FuzzParse loads arbitrary bytes as a configuration file: it must not
// panic, what it accepts must validate, and written back as YAML it must
// load again to the same configuration.
func FuzzParse(f *testing.F) {
	f.Add([]byte(example))
	f.Add([]byte(example + "spoe_max_connections: 4000\nspoe_idle_timeout: 1h\nmax_ttl: 48h\n"))
	f.Add([]byte(strings.Replace(example, "ttl: 30m", "ttl: 0", 1)))
	f.Add([]byte("backends: [{name: a, servers: [{name: s, address: '[::1]:1'}]}]\nhaproxy: {resolvers: [resolv.conf, '127.0.0.1:53']}\n"))
	f.Add([]byte("ttl: 1e9\n"))
	f.Add([]byte("&a [*a]"))
	f.Add([]byte("backends: !!binary AAAA\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 64<<10 || bytes.Contains(data, []byte("api_token_file")) {
			return // a token file is read from disk (/dev/zero...): not the fuzzer's to pick
		}
		cfg, err := Parse(bytes.NewReader(data), noEnv)
		if err != nil {
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("Parse accepted what Validate refuses: %v", err)
		}
		out, err := yaml.Marshal(&cfg)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		again, err := Parse(bytes.NewReader(out), noEnv)
		if err != nil {
			t.Fatalf("written back, it no longer loads: %v\n%s", err, out)
		}
		// Compared as YAML: a nil and an empty list are both "[]".
		if out2, _ := yaml.Marshal(&again); !bytes.Equal(out2, out) {
			t.Fatalf("round trip differs:\n%s\n%s", out, out2)
		}
	})
}
