package e2e

import (
	"fmt"
	"io"
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

// Scale-out: 3000 bindings on n1 and n2, n3 added (weights 1:1:1). A
// rebalance through `stickyd ctl` ends with every server within 5% of
// 1000, having moved exactly what the plan needs (950, not 1000 or more),
// and real clients follow their moved bindings.
func TestRebalanceAfterScaleOut(t *testing.T) {
	r := testenv.StartRedis(t)
	s := newStack(t, stackOpts{brokers: 3, redisURL: r.URL, quiet: true})
	// The stack's warm-up client holds a binding: gone, so the map is
	// exactly the 3000.
	code, b := s.api().do(http.MethodGet, "/v1/backends/mqtt/bindings?prefix=warmup", nil)
	items, _ := b["items"].([]any)
	for _, it := range items {
		id := it.(map[string]any)["client_id"].(string)
		if code, _ := s.api().do(http.MethodDelete, "/v1/backends/mqtt/bindings/"+id, nil); code != http.StatusNoContent {
			t.Fatalf("evict %s: %d", id, code)
		}
	}
	if code != 200 || len(items) != 1 {
		t.Fatalf("warm-up bindings: %d %v", code, b)
	}
	var body strings.Builder
	for i := range 3000 {
		fmt.Fprintf(&body, `{"client_id":"rb-%04d","server":"n%d"}`+"\n", i, 1+i%2)
	}
	req, _ := http.NewRequest(http.MethodPost, "http://"+s.apiAddr+"/v1/backends/mqtt/import", strings.NewReader(body.String()))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || string(data) != `{"imported":3000,"skipped":0,"errors":[]}`+"\n" {
		t.Fatalf("import: %d %s", res.StatusCode, data)
	}
	out, err := exec.Command(testenv.StickydBinary(t), "ctl", "--api", "http://"+s.apiAddr,
		"servers", "rebalance", "--rate", "5000", "--tolerance", "0.05", "--wait").CombinedOutput()
	if err != nil {
		t.Fatalf("ctl servers rebalance: %v\n%s", err, out)
	}
	last := strings.TrimSpace(string(out))
	last = last[strings.LastIndex(last, "\n")+1:]
	if !strings.HasPrefix(last, "Rebalance of mqtt: done, moved 950 of 950 planned, skipped 0, failed 0") {
		t.Fatalf("ctl said:\n%s", out)
	}
	counts := map[string]int{}
	var moved []string
	for _, srv := range []string{"n1", "n2", "n3"} {
		n := 0
		cursor := ""
		for {
			q := url.Values{"server": {srv}, "prefix": {"rb-"}, "limit": {"1000"}}
			if cursor != "" {
				q.Set("cursor", cursor)
			}
			code, b := s.api().do(http.MethodGet, "/v1/backends/mqtt/bindings?"+q.Encode(), nil)
			if code != 200 {
				t.Fatalf("list: %d %v", code, b)
			}
			items, _ := b["items"].([]any)
			n += len(items)
			for _, it := range items {
				if srv == "n3" && len(moved) < 20 {
					moved = append(moved, it.(map[string]any)["client_id"].(string))
				}
			}
			if cursor, _ = b["next_cursor"].(string); cursor == "" {
				break
			}
		}
		counts[srv] = n
	}
	t.Logf("after rebalance: %v", counts)
	if counts["n1"]+counts["n2"]+counts["n3"] != 3000 || counts["n3"] != 950 || counts["n1"] > 1050 || counts["n2"] > 1050 {
		t.Fatalf("counts %v: want n3=950 and n1, n2 <= 1050, 3000 in all", counts)
	}
	for id, node := range s.connectAll(moved) {
		if node != "n3" {
			t.Errorf("%s was moved to n3 but reached %s", id, node)
		}
	}
	code, b = s.api().do(http.MethodGet, "/v1/audit?limit=5", nil)
	items, _ = b["items"].([]any)
	if code != 200 || len(items) == 0 || items[0].(map[string]any)["action"] != "rebalance" {
		t.Fatalf("audit: %d %v", code, b)
	}
}
