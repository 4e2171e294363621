package agent

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/stickyd/stickyd/config"
)

var updateGolden = flag.Bool("update-golden", false, "rewrite testdata/failopen-golden.txt from the agent's placement")

// GoldenFile holds the fail-open placement of fixed ids; the e2e test
// TestFailOpenGoldenOnHAProxy checks HAProxy's rules against it too.
const GoldenFile = "testdata/failopen-golden.txt"

// GoldenServers is the backend the golden file is computed for.
var GoldenServers = []config.Server{{Name: "n1", Weight: 1}, {Name: "n2", Weight: 2}, {Name: "n3", Weight: 1}}

// goldenIDs: 190 plain ids and a few that exercise xxh32's paths (under
// 4 bytes, exactly 16, over 16, multi-byte UTF-8).
func goldenIDs() []string {
	var out []string
	for i := 0; i < 190; i++ {
		out = append(out, fmt.Sprintf("golden-%03d", i))
	}
	return append(out, "a", "ab", "abc", "abcd", "0123456789abcdef", "0123456789abcdefg",
		"sensor/eu-west-1/building-42/floor-7/room-311", "ключ-1", "客户端-2", strings.Repeat("z", 100))
}

// The fail-open placement is one function (rendezvous.go); these values
// pin it. A change here also changes what HAProxy's rules compute and
// where a fleet sends new clients while agents or Redis are down.
func TestFailOpenGolden(t *testing.T) {
	b := newBackend(config.Backend{Name: "mqtt", Servers: GoldenServers})
	all := func(int) bool { return true }
	noN2 := func(i int) bool { return i != 1 }
	var got strings.Builder
	got.WriteString("# id all-up n2-down; servers n1 (weight 1), n2 (2), n3 (1); agent/rendezvous.go\n")
	for _, id := range goldenIDs() {
		fmt.Fprintf(&got, "%s %s %s\n", id, b.Servers[b.rendezvous([]byte(id), all)].Name, b.Servers[b.rendezvous([]byte(id), noN2)].Name)
	}
	if *updateGolden {
		if err := os.WriteFile(GoldenFile, []byte(got.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(GoldenFile)
	if err != nil {
		t.Fatal(err)
	}
	if got.String() != string(want) {
		t.Fatalf("fail-open placement changed (go test ./agent -run Golden -update-golden rewrites %s):\n%s", GoldenFile, got.String())
	}
	// Every server wins some ids, in proportion to its weight.
	counts := map[string]int{}
	sc := bufio.NewScanner(strings.NewReader(string(want)))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 3 && f[0] != "#" {
			counts[f[1]]++
		}
	}
	if counts["n1"] < 30 || counts["n2"] < 70 || counts["n3"] < 30 {
		t.Errorf("golden ids per server %v: want about 50/100/50", counts)
	}
}
