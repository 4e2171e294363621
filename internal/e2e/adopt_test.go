package e2e

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stickyd/stickyd/internal/testenv"
)

// seedHAProxy is the seed's setup: HAProxy's own stick table on the MQTT
// client id, roundrobin for new clients, an admin stats socket.
const seedHAProxy = `global
  stats socket %s level admin
defaults
  mode tcp
  timeout connect 2s
  timeout client 30s
  timeout server 30s
frontend mqtt_in
  bind %s
  tcp-request inspect-delay 5s
  tcp-request content reject unless { req.payload(0,0),mqtt_is_valid }
  default_backend mqtt
backend mqtt
  balance roundrobin
  stick-table type string len 32 size 100k expire 30m
  stick on req.payload(0,0),mqtt_field_value(connect,client_identifier)
  server n1 %s
  server n2 %s
`

// Adoption: clients placed by the seed's stick table keep their node once
// stickyd, fed by `stickyd import`, routes them instead; on the memory
// store (through the agent's API) and on Redis (directly).
func TestImportFromStickTableMovesNobody(t *testing.T) {
	testenv.RequireBinary(t, "haproxy")
	brokers := []*testenv.Broker{testenv.StartMosquitto(t, "n1"), testenv.StartMosquitto(t, "n2")}
	dir := t.TempDir()
	sock := filepath.Join(dir, "seed.sock")
	seedFE := testenv.FreeAddr(t)
	seedDir := filepath.Join(dir, "seed")
	if err := os.MkdirAll(seedDir, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(seedHAProxy, sock, seedFE, brokers[0].Addr, brokers[1].Addr)
	if err := os.WriteFile(filepath.Join(seedDir, "haproxy.cfg"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	seed := testenv.StartHAProxy(t, seedDir, seedFE)
	defer seed.Proc.Stop()

	clients := ids("adopt", 300) // 10 bytes: the table keeps them whole
	// Ids the seed cannot hold exactly: 32 bytes (len) and longer. The two
	// M ids share one truncated key, so the table holds 2 such entries.
	long := []string{strings.Repeat("L", 32), strings.Repeat("M", 40) + "-a", strings.Repeat("M", 40) + "-b"}
	truncated := []string{strings.Repeat("L", 32), strings.Repeat("M", 32)}
	seedStack := &stack{t: t, feAddr: seedFE}
	before := seedStack.connectAll(append(append([]string{}, clients...), long...))
	perNode := map[string]int{}
	for _, id := range clients {
		perNode[before[id]]++
	}
	if perNode["n1"] == 0 || perNode["n2"] == 0 {
		t.Fatalf("the seed put every client on one node: %v", perNode)
	}

	for _, tc := range []struct {
		name  string
		redis bool
	}{{"memory", false}, {"redis", true}} {
		t.Run(tc.name, func(t *testing.T) {
			redisURL := ""
			if tc.redis {
				redisURL = testenv.StartRedis(t).URL
			}
			s := adoptStack(t, brokers, redisURL)
			bin := testenv.StickydBinary(t)
			imp := func(extra ...string) string {
				t.Helper()
				args := append([]string{"import", "--config", s.cfgPath, "--from-haproxy", sock, "--table", "mqtt"}, extra...)
				out, err := exec.Command(bin, args...).CombinedOutput()
				if err != nil {
					t.Fatalf("stickyd %s: %v\n%s", strings.Join(args, " "), err, out)
				}
				return string(out)
			}
			out := imp("--dry-run")
			if !strings.Contains(out, "dry run: 300 would be imported, 2 skipped") {
				t.Fatalf("dry run said:\n%s", out)
			}
			if n := s.bindingCount("adopt"); n != 0 {
				t.Fatalf("dry run wrote %d bindings", n)
			}
			out = imp()
			if !strings.Contains(out, "imported 300, skipped 2 (already bound in stickyd: 0, not importable: 2)") {
				t.Fatalf("import said:\n%s", out)
			}
			for _, id := range truncated {
				if !strings.Contains(out, `skipped "`+id+`": key is 32 bytes, the table's len: HAProxy may have truncated it`) {
					t.Errorf("import does not report %q as truncated:\n%s", id, out)
				}
			}
			if n := s.bindingCount("adopt"); n != 300 {
				t.Fatalf("after import the API counts %d bindings, want 300", n)
			}
			// The expiry came along: what remains of the seed's 30m, not
			// stickyd's ttl (1h here).
			code, b := s.api().do(http.MethodGet, "/v1/backends/mqtt/bindings/adopt-0007", nil)
			if ttl, _ := b["ttl_seconds"].(float64); code != 200 || ttl < 60 || ttl > 1800 {
				t.Fatalf("binding of adopt-0007: %d %v, want ttl_seconds within the seed's 30m", code, b)
			}
			// Again: nothing is overwritten.
			out = imp()
			if !strings.Contains(out, "imported 0, skipped 302 (already bound in stickyd: 300, not importable: 2)") {
				t.Fatalf("second import said:\n%s", out)
			}

			// Without the import, rendezvous hashing would place this many
			// elsewhere: the test can fail.
			wouldMove := 0
			for _, id := range clients {
				code, b := s.api().do(http.MethodGet, "/v1/backends/mqtt/placement/"+id, nil)
				if code != 200 {
					t.Fatalf("placement of %s: %d %v", id, code, b)
				}
				if b["server"] != before[id] {
					wouldMove++
				}
			}
			if wouldMove < 50 {
				t.Fatalf("only %d of 300 would move without the import: the test proves nothing", wouldMove)
			}
			after := s.connectAll(clients)
			moved := 0
			for _, id := range clients {
				if after[id] != before[id] {
					moved++
				}
			}
			t.Logf("%d of %d clients moved (seed placed n1=%d n2=%d; hashing alone would have moved %d)", moved, len(clients), perNode["n1"], perNode["n2"], wouldMove)
			if moved != 0 {
				t.Fatalf("%d of %d clients moved at the switch, want 0", moved, len(clients))
			}
		})
	}
}

// adoptStack starts stickyd (ttl 1h) and its generated HAProxy in front
// of existing brokers.
func adoptStack(t *testing.T, brokers []*testenv.Broker, redisURL string) *stack {
	t.Helper()
	return newStack(t, stackOpts{shared: brokers, redisURL: redisURL, quiet: true, ttl: "1h"})
}

// bindingCount counts the bindings whose id starts with prefix, paging
// through the API.
func (s *stack) bindingCount(prefix string) int {
	s.t.Helper()
	n, cursor := 0, ""
	for range 1000 {
		q := url.Values{"prefix": {prefix}, "limit": {"1000"}}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		code, b := s.api().do(http.MethodGet, "/v1/backends/mqtt/bindings?"+q.Encode(), nil)
		if code != 200 {
			s.t.Fatalf("list bindings: %d %v", code, b)
		}
		items, _ := b["items"].([]any)
		n += len(items)
		if cursor, _ = b["next_cursor"].(string); cursor == "" {
			return n
		}
	}
	s.t.Fatal("list bindings: no end after 1000 pages")
	return 0
}
