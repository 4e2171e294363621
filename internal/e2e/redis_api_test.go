package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stickyd/stickyd/internal/testenv"
)

// Bindings live in Redis: they survive a stickyd restart. The clients are
// placed while n1 is down, so their bindings (all n2) differ from what the
// hash would choose once n1 is back; a restart that lost them would send
// about half to n1.
func TestBindingsSurviveStickydRestartWithRedis(t *testing.T) {
	r := testenv.StartRedis(t)
	s := newStack(t, stackOpts{redisURL: r.URL})
	clients := ids("restart", 150)
	s.placeWhileDown("n1", clients)

	s.stickyd.Stop()
	s.startStickyd()
	s.waitAgentUsed()
	for round := 0; round < 5; round++ {
		again := s.connectAll(clients)
		for _, id := range clients {
			if again[id] != "n2" {
				t.Fatalf("round %d after restart: %s reached %s, its binding says n2", round, id, again[id])
			}
		}
	}
	// New clients still spread over both nodes.
	fresh := s.connectAll(ids("fresh", 40))
	seen := map[string]bool{}
	for _, n := range fresh {
		seen[n] = true
	}
	if !seen["n1"] || !seen["n2"] {
		t.Fatalf("new clients after restart: %v", fresh)
	}
}

// apiClient talks to the admin API of a stack.
type apiClient struct {
	t     *testing.T
	base  string
	token string
}

func (s *stack) api() *apiClient {
	return &apiClient{t: s.t, base: "http://" + s.apiAddr, token: s.token}
}

func (c *apiClient) do(method, path string, body any) (int, map[string]any) {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var out map[string]any
	data, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(data, &out)
	return resp.StatusCode, out
}

func other(n string) string { return map[string]string{"n1": "n2", "n2": "n1"}[n] }

// The API steers real connections: pin, evict, drain; an MQTT 5 client's
// session expiry sets its binding's TTL. Run on Redis, with a token.
func TestAPISteersConnections(t *testing.T) {
	r := testenv.StartRedis(t)
	s := newStack(t, stackOpts{redisURL: r.URL, token: "e2e-secret-token"})
	c := s.api()

	// The token is required on /v1, not on /healthz.
	noAuth := &apiClient{t: t, base: c.base}
	if code, _ := noAuth.do("GET", "/v1/backends", nil); code != http.StatusUnauthorized {
		t.Fatalf("no token: %d", code)
	}
	if code, _ := noAuth.do("GET", "/healthz", nil); code != http.StatusOK {
		t.Fatalf("healthz: %d", code)
	}
	if code, _ := noAuth.do("GET", "/readyz", nil); code != http.StatusOK {
		t.Fatalf("readyz: %d", code)
	}

	// Pin a client to the node the hash would not choose.
	home := s.connectAll([]string{"pin-me"})["pin-me"]
	code, b := c.do("PUT", "/v1/backends/mqtt/bindings/"+url.PathEscape("pin-me"), map[string]any{"server": other(home), "pinned": true, "ttl_seconds": 600})
	if code != http.StatusOK || b["server"] != other(home) || b["pinned"] != true {
		t.Fatalf("pin: %d %v", code, b)
	}
	for i := 0; i < 3; i++ {
		if got := s.connectAll([]string{"pin-me"})["pin-me"]; got != other(home) {
			t.Fatalf("pinned to %s, reached %s", other(home), got)
		}
	}
	// Evict it: it is placed again by the hash, on its home node.
	if code, _ := c.do("DELETE", "/v1/backends/mqtt/bindings/pin-me", nil); code != http.StatusNoContent {
		t.Fatalf("evict: %d", code)
	}
	if code, _ := c.do("GET", "/v1/backends/mqtt/bindings/pin-me", nil); code != http.StatusNotFound {
		t.Fatalf("after evict: %d", code)
	}
	if got := s.connectAll([]string{"pin-me"})["pin-me"]; got != home {
		t.Fatalf("evicted client placed on %s, want %s", got, home)
	}
	if code, b := c.do("GET", "/v1/backends/mqtt/bindings/pin-me", nil); code != http.StatusOK || b["server"] != home {
		t.Fatalf("placed again: %d %v", code, b)
	}

	// Odd ids through the API and HAProxy alike.
	for _, id := range []string{"a/b", "a%2Fb", "sp ace", "ünï"} {
		home := s.connectAll([]string{id})[id]
		code, b := c.do("GET", "/v1/backends/mqtt/bindings/"+url.PathEscape(id), nil)
		if code != http.StatusOK || b["client_id"] != id || b["server"] != home {
			t.Fatalf("%q: %d %v (reached %s)", id, code, b, home)
		}
	}

	// Drain n1: new clients avoid it, a client bound to it stays.
	clients := ids("drain", 40)
	placed := s.connectAll(clients)
	var bound string
	for _, id := range clients {
		// On n1 and bound there in Redis: a connect answered while the
		// store was slow (fail open) reaches a node but records nothing.
		if placed[id] != "n1" {
			continue
		}
		if code, b := c.do("GET", "/v1/backends/mqtt/bindings/"+id, nil); code == http.StatusOK && b["server"] == "n1" {
			bound = id
			break
		}
	}
	if bound == "" {
		t.Fatal("no client on n1")
	}
	if code, b := c.do("PUT", "/v1/backends/mqtt/servers/n1/drain", nil); code != http.StatusOK || b["draining"] != true {
		t.Fatalf("drain: %d %v", code, b)
	}
	for id, n := range s.connectAll(ids("after-drain", 40)) {
		if n != "n2" {
			t.Fatalf("new client %s placed on draining n1", id)
		}
	}
	if got := s.connectAll([]string{bound})[bound]; got != "n1" {
		t.Fatalf("bound client %s left draining n1 for %s", bound, got)
	}
	code, b = c.do("GET", "/v1/backends", nil)
	if code != http.StatusOK || !strings.Contains(fmt.Sprint(b), "draining:true") {
		t.Fatalf("backends: %d %v", code, b)
	}
	if code, _ := c.do("DELETE", "/v1/backends/mqtt/servers/n1/drain", nil); code != http.StatusOK {
		t.Fatalf("undrain: %d", code)
	}
	// Evict every binding of n1.
	code, b = c.do("DELETE", "/v1/backends/mqtt/bindings?server=n1", nil)
	if code != http.StatusOK || b["deleted"].(float64) < 1 {
		t.Fatalf("evict server: %d %v", code, b)
	}
	if code, _ := c.do("GET", "/v1/backends/mqtt/bindings/"+bound, nil); code != http.StatusNotFound {
		t.Fatalf("binding of n1 survived eviction: %d", code)
	}

	// An MQTT 5 client asking for a 2-hour session gets a binding that long.
	bin := testenv.RequireBinary(t, "mosquitto_sub")
	host, port, _ := net.SplitHostPort(s.feAddr)
	out, err := exec.Command(bin, "-h", host, "-p", port, "-t", testenv.NodeTopic, "-C", "1", "-W", "10", "-V", "mqttv5", "-i", "v5-long", "-x", "7200", "-c").CombinedOutput()
	if err != nil {
		t.Fatalf("mosquitto_sub: %v %s", err, out)
	}
	code, b = c.do("GET", "/v1/backends/mqtt/bindings/v5-long", nil)
	if ttl, _ := b["ttl_seconds"].(float64); code != http.StatusOK || ttl > 7200 || ttl < 7190 {
		t.Fatalf("MQTT 5 session expiry not applied: %d %v", code, b)
	}
}

// serve refuses a non-loopback API without a token, and names the problem.
func TestServeRefusesOpenAPIWithoutToken(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "stickyd.yaml")
	body := fmt.Sprintf("spoe_listen: %q\napi_listen: \"0.0.0.0:%d\"\nbackends:\n  - name: mqtt\n    servers: [{name: n1, address: \"127.0.0.1:1\"}]\n", testenv.FreeAddr(t), testenv.FreePort(t))
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(testenv.StickydBinary(t), "serve", "--config", cfg)
	done := make(chan error, 1)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(out.String(), "api_token") {
			t.Fatalf("want a refusal naming api_token, got %v: %s", err, out.String())
		}
	case <-time.After(15 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("serve started with an open API on a non-loopback address")
	}
}
