package e2e

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stickyd/stickyd/haproxy"
	"github.com/stickyd/stickyd/internal/testenv"
)

// The suite runs on the haproxy first on PATH (make test runs it again
// with Debian's 3.0.11 first): say which, and check the generated
// configuration targets that line.
func TestHAProxyOnPath(t *testing.T) {
	bin := testenv.RequireBinary(t, "haproxy")
	out, err := exec.Command(bin, "-v").Output()
	if err != nil {
		t.Fatalf("%s -v: %v", bin, err)
	}
	first, _, _ := strings.Cut(string(out), "\n")
	t.Logf("%s: %s", bin, first)
	v, err := haproxy.ParseVersion(first)
	if err != nil {
		t.Fatal(err)
	}
	want, err := v.Check()
	if err != nil {
		t.Fatal(err)
	}
	s := newStack(t, stackOpts{})
	cfg, err := os.ReadFile(s.haproxy.Cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(cfg), fmt.Sprintf("for HAProxy %s ", want)) {
		t.Fatalf("%s does not target HAProxy %s (from %q):\n%.300s", s.haproxy.Cfg, want, first, cfg)
	}
}

// golden reads agent/testdata/failopen-golden.txt: id -> [all up, n2 down].
func golden(t *testing.T) (ids []string, want map[string][2]string) {
	f, err := os.Open("../../agent/testdata/failopen-golden.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want = map[string][2]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		if len(fl) != 3 || fl[0] == "#" {
			continue
		}
		ids = append(ids, fl[0])
		want[fl[0]] = [2]string{fl[1], fl[2]}
	}
	if len(ids) != 200 {
		t.Fatalf("golden file: %d ids, want 200", len(ids))
	}
	return ids, want
}

// One fail-open placement: the golden ids reach the same nodes from the
// agent with Redis stopped, from HAProxy with the agent stopped (and
// hung), and from the agent placing new clients, with every server up
// and with n2 down. Brokers n1, n2, n3 have weights 1, 2, 1, as in the
// golden file (agent.TestFailOpenGolden).
func TestFailOpenGoldenOnHAProxy(t *testing.T) {
	r := testenv.StartRedis(t)
	s := newStack(t, stackOpts{brokers: 3, weights: []int{1, 2, 1}, redisURL: r.URL})
	ids, want := golden(t)
	check := func(round string, col int, got map[string]string) {
		t.Helper()
		bad := 0
		for _, id := range ids {
			if got[id] != want[id][col] {
				if bad++; bad <= 5 {
					t.Errorf("%s: %s reached %s, golden %s", round, id, got[id], want[id][col])
				}
			}
		}
		if bad > 0 {
			t.Fatalf("%s: %d of %d ids off the golden placement", round, bad, len(ids))
		}
	}
	decided := func(outcome string) float64 {
		return s.metric(`stickyd_decisions_total{outcome="` + outcome + `"}`)
	}
	// HAProxy's own rules decided (agent=- failopen=<node>): every log line
	// found must name the golden node. A connection is logged when it ends,
	// and HAProxy drops log lines when stdout would block (a loaded
	// machine): a few may be missing, most may not.
	viaHAProxy := func(round string, since int, col int) {
		t.Helper()
		missing := 0
		for wait := 0; wait < 20; wait++ {
			log := s.haproxy.Proc.Output()[since:]
			missing = 0
			for _, id := range ids[:190] { // ASCII ids: the log escapes others
				re := regexp.MustCompile(`key=` + regexp.QuoteMeta(id) + ` agent=- .* failopen=(n\d)`)
				m := re.FindStringSubmatch(log)
				if m == nil {
					missing++
				} else if m[1] != want[id][col] {
					t.Fatalf("%s: HAProxy's rules chose %s for %s, golden %s", round, m[1], id, want[id][col])
				}
			}
			if missing == 0 {
				return
			}
			time.Sleep(500 * time.Millisecond)
		}
		if missing > 19 {
			t.Fatalf("%s: %d of 190 connections have no fail-open log line", round, missing)
		}
		t.Logf("%s: %d of 190 log lines missing (dropped by HAProxy), the rest match", round, missing)
	}

	// Each round starts with HAProxy's tables empty, so it shows one path:
	// the table of answers would answer bound clients itself, and the
	// fallback table's entries would be adopted by the agent ("seen").
	forget := func() {
		t.Helper()
		s.runtime("clear table mqtt")
		s.runtime("clear table mqtt" + haproxy.FallbackSuffix)
	}

	r.Kill()
	before := decided("fallback")
	check("agent, Redis stopped", 0, s.connectAll(ids))
	if n := decided("fallback") - before; n < 200 {
		t.Fatalf("agent, Redis stopped: %v fallback decisions, want 200", n)
	}
	ups := strings.Count(s.haproxy.Proc.Output(), "Server mqtt/n2 is UP")
	s.broker("n2").Stop()
	s.waitDown("n2")
	forget()
	before = decided("fallback")
	check("agent, Redis stopped, n2 down", 1, s.connectAll(ids))
	if n := decided("fallback") - before; n < 200 {
		t.Fatalf("agent, Redis stopped, n2 down: %v fallback decisions, want 200", n)
	}

	s.stickyd.Stop()
	forget()
	since := len(s.haproxy.Proc.Output())
	check("HAProxy, agent stopped, n2 down", 1, s.connectAll(ids))
	viaHAProxy("HAProxy, agent stopped, n2 down", since, 1)
	s.broker("n2").Restart(t)
	s.waitUp("n2", ups)
	forget()
	since = len(s.haproxy.Proc.Output())
	check("HAProxy, agent stopped", 0, s.connectAll(ids))
	viaHAProxy("HAProxy, agent stopped", since, 0)

	r.StartAgain(t)
	s.startStickyd()
	s.waitAgentUsed()
	forget()
	before = decided("placed")
	check("agent placing new clients", 0, s.connectAll(ids))
	if n := decided("placed") - before; n < 200 {
		t.Fatalf("agent placing new clients: %v placed decisions, want 200", n)
	}

	// A hung agent (SIGSTOP): each connect waits timeout processing (or
	// the check marks the agent down), then the same placement applies.
	forget()
	s.stickyd.Signal(syscall.SIGSTOP)
	defer s.stickyd.Signal(syscall.SIGCONT)
	fresh := ids[:16]
	start := time.Now()
	got := s.connectAll(fresh)
	t.Logf("agent hung: %d connects (8 at a time) in %v", len(fresh), time.Since(start).Round(time.Millisecond))
	for _, id := range fresh {
		if got[id] != want[id][0] {
			t.Fatalf("HAProxy, agent hung: %s reached %s, golden %s", id, got[id], want[id][0])
		}
	}
	s.stickyd.Signal(syscall.SIGCONT)
	t.Logf("golden placement held: agent (Redis stopped), HAProxy (agent stopped, hung), agent placing; all up and n2 down")
}
