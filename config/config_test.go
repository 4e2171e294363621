package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

const example = `
spoe_listen: 127.0.0.1:12345
api_listen: 127.0.0.1:8080
api_token: ""
redis_url: ""
ttl: 30m
backends:
  - name: mqtt
    key: client_id
    servers:
      - {name: n1, address: 127.0.0.1:1883, weight: 1}
      - {name: n2, address: 127.0.0.1:1884, weight: 1}
haproxy:
  bind: ":1883"
  agents: ["127.0.0.1:12345"]
`

func noEnv(string) (string, bool) { return "", false }

func envOf(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestParseExample(t *testing.T) {
	cfg, err := Parse(strings.NewReader(example), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.TTL.D() != 30*time.Minute || len(cfg.Backends[0].Servers) != 2 || cfg.Backends[0].Bind != ":1883" {
		t.Fatalf("%+v", cfg)
	}
	if cfg.StoreTimeout.D() != 50*time.Millisecond || cfg.HAProxy.TimeoutProcessing.D() != 200*time.Millisecond {
		t.Fatalf("defaults not applied: %+v", cfg)
	}
}

func TestParseErrorsNameTheKey(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"unknown top-level key", example + "colour: blue\n", `unknown key "colour"`},
		{"unknown nested key", strings.Replace(example, "key: client_id", "key: client_id\n    sticky: yes", 1), `unknown key "sticky"`},
		{"bad duration", strings.Replace(example, "ttl: 30m", "ttl: soon", 1), `"soon" is not a duration`},
		{"bad key kind", strings.Replace(example, "key: client_id", "key: ip", 1), "backends[0].key"},
		{"weight out of range", strings.Replace(example, "weight: 1}\n      - {name: n2", "weight: 999}\n      - {name: n2", 1), "backends[0].servers[0].weight"},
		{"duplicate server", strings.Replace(example, "name: n2", "name: n1", 1), "backends[0].servers[1].name"},
		{"bad server name", strings.Replace(example, "name: n2", "name: 'n:2'", 1), "backends[0].servers[1].name"},
		{"bad address", strings.Replace(example, "127.0.0.1:1884", "nowhere", 1), "backends[0].servers[1].address"},
		{"no backends", "ttl: 1m\n", "backends"},
		{"bad redis scheme", strings.Replace(example, `redis_url: ""`, `redis_url: "http://x"`, 1), "redis_url"},
		// Refused by the store's own parser, which check-config shares with serve.
		{"sentinel without master name", strings.Replace(example, `redis_url: ""`, `redis_url: "redis-sentinel://127.0.0.1:26379"`, 1), "redis_url: bad redis-sentinel URL: missing ?master_name="},
		{"cluster without host", strings.Replace(example, `redis_url: ""`, `redis_url: "redis-cluster://"`, 1), "redis_url: bad redis-cluster URL: no host"},
		{"unix without path", strings.Replace(example, `redis_url: ""`, `redis_url: "unix://"`, 1), "redis_url: bad URL: empty unix socket path"},
		{"store timeout above processing", example + "store_timeout: 1s\n", "store_timeout"},
		{"negative max_bindings", example + "max_bindings: -1\n", "config: max_bindings: must be between 0"},
		{"huge max_bindings", example + "max_bindings: 1000000001\n", "config: max_bindings: must be between 0"},
		{"spoe_max_connections 0", example + "spoe_max_connections: 0\n", "spoe_max_connections"},
		{"spoe_frame_timeout too short", example + "spoe_frame_timeout: 100ms\n", "spoe_frame_timeout"},
		{"spoe_idle_timeout under HAProxy's", example + "spoe_idle_timeout: 1m\n", "spoe_idle_timeout"},
		{"max_ttl below ttl", example + "max_ttl: 10m\n", "max_ttl"},
		{"max_ttl zero", example + "max_ttl: 0\n", "max_ttl"},
		{"two documents", example + "---\nttl: 1m\n", "more than one YAML document"},
		{"relative unix spoe_listen", strings.Replace(example, "\nspoe_listen: 127.0.0.1:12345\n", "\nspoe_listen: unix@spoe.sock\n", 1), "spoe_listen"},
		{"negative local_fresh", strings.Replace(example, "haproxy:\n", "haproxy:\n  local_fresh: -1s\n", 1), "haproxy.local_fresh"},
		{"local_peer off loopback", strings.Replace(example, "haproxy:\n", "haproxy:\n  local_peer: 0.0.0.0:10011\n", 1), `config: haproxy.local_peer: "0.0.0.0:10011": want a loopback address`},
		{"local_peer on port 0", strings.Replace(example, "haproxy:\n", "haproxy:\n  local_peer: 127.0.0.1:0\n", 1), `config: haproxy.local_peer: "127.0.0.1:0": want a fixed port`},
		{"local_peer without port", strings.Replace(example, "haproxy:\n", "haproxy:\n  local_peer: 127.0.0.1\n", 1), `config: haproxy.local_peer: "127.0.0.1": want host:port`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(strings.NewReader(tc.yaml), noEnv)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want error containing %q, got %v", tc.want, err)
			}
		})
	}
}

func TestEnvOverrides(t *testing.T) {
	cfg, err := Parse(strings.NewReader(example), envOf(map[string]string{
		"STICKYD_REDIS_URL":                  "redis://:secret@127.0.0.1:6379/0",
		"STICKYD_TTL":                        "600",
		"STICKYD_HAPROXY_BIND":               "0.0.0.0:1884",
		"STICKYD_HAPROXY_AGENTS":             "127.0.0.1:1, 127.0.0.1:2",
		"STICKYD_LOG_LEVEL":                  "debug",
		"STICKYD_HAPROXY_TIMEOUT_PROCESSING": "300ms",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.RedisURL == "" || cfg.TTL.D() != 10*time.Minute || cfg.HAProxy.Bind != "0.0.0.0:1884" ||
		len(cfg.HAProxy.Agents) != 2 || cfg.Log.Level != "debug" || cfg.HAProxy.TimeoutProcessing.D() != 300*time.Millisecond {
		t.Fatalf("%+v", cfg)
	}
	_, err = Parse(strings.NewReader(example), envOf(map[string]string{"STICKYD_TTL": "later"}))
	if err == nil || !strings.Contains(err.Error(), "STICKYD_TTL") {
		t.Fatalf("bad env value should name the variable: %v", err)
	}
}

func TestUnixSPOEAndFreshWindow(t *testing.T) {
	cfg, err := Parse(strings.NewReader(strings.Replace(example, "\nspoe_listen: 127.0.0.1:12345\n", "\nspoe_listen: unix@/run/stickyd/spoe.sock\n", 1)), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if UnixPath(cfg.SPOEListen) != "/run/stickyd/spoe.sock" || UnixPath("127.0.0.1:1") != "" {
		t.Fatalf("spoe_listen %q", cfg.SPOEListen)
	}
	for _, c := range []struct {
		ttl, fresh, want time.Duration
	}{{30 * time.Minute, 10 * time.Second, 10 * time.Second}, {4 * time.Second, 10 * time.Second, 2 * time.Second}, {0, time.Hour, time.Hour}} {
		cfg.TTL, cfg.HAProxy.LocalFresh = Duration(c.ttl), Duration(c.fresh)
		if got := cfg.LocalFreshWindow(); got != c.want {
			t.Errorf("ttl %v, local_fresh %v: window %v, want %v", c.ttl, c.fresh, got, c.want)
		}
	}
}

func TestTokenFile(t *testing.T) {
	const tok = "s3cret-0123456789abcdef"
	for _, tc := range []struct {
		mode    os.FileMode
		exposed bool
	}{{0o600, false}, {0o400, false}, {0o640, true}, {0o440, true}, {0o604, true}, {0o644, true}, {0o620, true}} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "token")
			if err := os.WriteFile(p, []byte(tok+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, tc.mode); err != nil { // past the umask
				t.Fatal(err)
			}
			cfg, err := Parse(strings.NewReader(example+"api_token_file: "+p+"\n"), noEnv)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.APIToken != tok || cfg.APITokenFileMode != tc.mode || cfg.TokenFileExposed() != tc.exposed {
				t.Fatalf("token %q mode %v exposed %v, want mode %v exposed %v", cfg.APIToken, cfg.APITokenFileMode, cfg.TokenFileExposed(), tc.mode, tc.exposed)
			}
		})
	}
	t.Run("inline token", func(t *testing.T) {
		cfg, err := Parse(strings.NewReader(example), envOf(map[string]string{"STICKYD_API_TOKEN": tok}))
		if err != nil || cfg.TokenFileExposed() {
			t.Fatalf("%v, exposed %v", err, cfg.TokenFileExposed())
		}
	})
}

// TestTokenTooShort: a token under 16 bytes is refused, naming where it
// came from and its length but never the token.
func TestTokenTooShort(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, token string
		file        bool
		wantErr     string
	}{
		{"inline 15", "0123456789abcde", false, "api_token: the token is 15 bytes, want at least 16"},
		{"file 6", "s3cret", true, "api_token_file: the token is 6 bytes, want at least 16"},
		{"file padded", "  short-token \n\n", true, "api_token_file: the token is 11 bytes"},
		{"inline 16", "0123456789abcdef", false, ""},
		{"file 16", "0123456789abcdef\n", true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{}
			if tc.file {
				p := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_"))
				if err := os.WriteFile(p, []byte(tc.token), 0o600); err != nil {
					t.Fatal(err)
				}
				env["STICKYD_API_TOKEN_FILE"] = p
			} else {
				env["STICKYD_API_TOKEN"] = tc.token
			}
			_, err := Parse(strings.NewReader(example), envOf(env))
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want %q", err, tc.wantErr)
			}
			if strings.Contains(err.Error(), strings.TrimSpace(tc.token)) {
				t.Errorf("the error shows the token: %v", err)
			}
		})
	}
}

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:8080": true, "[::1]:8080": true, "localhost:80": true,
		"0.0.0.0:8080": false, ":8080": false, "10.0.0.1:80": false,
	} {
		if IsLoopback(addr) != want {
			t.Errorf("IsLoopback(%q) != %v", addr, want)
		}
	}
}

// The README's configuration reference decodes strictly and says the
// defaults ("Defaults are the values shown"): everything but the example
// backends and the agents list (which defaults to spoe_listen) is what
// Default gives.
func TestREADMEConfigurationIsTheDefaults(t *testing.T) {
	data, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(data), "## Configuration")
	if !ok {
		t.Fatal("README has no Configuration section")
	}
	_, rest, ok = strings.Cut(rest, "```yaml\n")
	block, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatal("no yaml block in the README's Configuration section")
	}
	got, err := Parse(strings.NewReader(block), noEnv)
	if err != nil {
		t.Fatalf("the README's configuration: %v", err)
	}
	want := Default()
	got.Backends, want.Backends = nil, nil
	got.HAProxy.Agents, want.HAProxy.Agents = nil, nil
	if len(got.HAProxy.Resolvers) == 0 {
		got.HAProxy.Resolvers = nil // "resolvers: []" shown for the empty default
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("the README's values differ from the defaults:\nREADME  %+v\ndefault %+v", got, want)
	}
}
