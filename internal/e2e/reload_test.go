package e2e

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stickyd/stickyd/agent"
	"github.com/stickyd/stickyd/internal/testenv"
)

// failOpenNode is where the fail-open placement sends id among equally
// weighted n1 and n2, both up (agent/rendezvous.go: the first listed wins
// a tie).
func failOpenNode(id string) string {
	n1 := agent.FailOpenScore([]byte(id), agent.DrawSeeds("n1", 1))
	n2 := agent.FailOpenScore([]byte(id), agent.DrawSeeds("n2", 1))
	if n2 > n1 {
		return "n2"
	}
	return "n1"
}

// peersResync is HAProxy's PEER_RESYNC_TIMEOUT (5 s) and a margin: a
// process started without a predecessor teaches the next one its tables
// only after it.
const peersResync = 6 * time.Second

// HAProxy reloaded while the agent is down. With haproxy.local_peer the old
// process hands its table of answers to the new one and no bound client
// moves; without it the new process starts with an empty table and exactly
// the clients whose fail-open placement differs from their binding move.
// So do they when the reload reorders the servers: the entries hold server
// ids, which then name other servers, and the local peer's new name makes
// HAProxy refuse the hand-over (handed over, all 40 would reach n1).
func TestReloadWithAgentDown(t *testing.T) {
	for _, tc := range []struct {
		name            string
		peer, reordered bool
	}{{"local_peer", true, false}, {"no local_peer", false, false}, {"local_peer servers reordered", true, true}} {
		t.Run(tc.name, func(t *testing.T) {
			extra := ""
			if tc.peer {
				extra = fmt.Sprintf("  local_peer: %q\n", testenv.FreeAddr(t))
			}
			s := newStack(t, stackOpts{extra: extra})
			started := time.Now()
			clients := ids("reload", 40)
			// Placed while n1 is down: all on n2, about half of them apart
			// from where the fail-open placement puts them with both up.
			placed := s.placeWhileDown("n1", clients)
			wantMoved := 0
			for _, id := range clients {
				if failOpenNode(id) != placed[id] {
					wantMoved++
				}
			}
			if wantMoved == 0 {
				t.Fatal("every client is where the fail-open placement puts it: the test could not tell")
			}
			s.stickyd.Stop()
			// A process started afresh hands its tables over only once its
			// peers resync timer (5 s in HAProxy) has run out: wait it out.
			time.Sleep(time.Until(started.Add(peersResync)))
			if tc.reordered {
				s.swapServers()
			}
			s.reload()
			again := s.connectAll(clients)
			moved := 0
			for _, id := range clients {
				if again[id] != placed[id] {
					moved++
				}
			}
			t.Logf("agent down, HAProxy reloaded: %d of %d clients moved (%d placed apart from the fail-open placement)", moved, len(clients), wantMoved)
			if tc.peer && !tc.reordered && moved != 0 {
				t.Fatalf("%d clients moved through a reload with local_peer", moved)
			}
			if tc.peer && !tc.reordered {
				// A process that was taught passes the tables on at once.
				s.reload()
				for id, n := range s.connectAll(clients) {
					if n != placed[id] {
						t.Fatalf("second reload at once: %s moved from %s to %s", id, placed[id], n)
					}
				}
			}
			if (!tc.peer || tc.reordered) && moved != wantMoved {
				t.Fatalf("%d clients moved, want %d (the fail-open placement's)", moved, wantMoved)
			}
		})
	}
}

// swapServers lists n2 before n1 in the stack's configuration and writes
// HAProxy's configuration again (the next reload applies it).
func (s *stack) swapServers() {
	s.t.Helper()
	data, err := os.ReadFile(s.cfgPath)
	if err != nil {
		s.t.Fatal(err)
	}
	lines := strings.Split(string(data), "\n")
	var at []int
	for i, l := range lines {
		if strings.HasPrefix(l, "      - {name: n") {
			at = append(at, i)
		}
	}
	if len(at) != 2 {
		s.t.Fatalf("want 2 server lines in %s, found %d", s.cfgPath, len(at))
	}
	lines[at[0]], lines[at[1]] = lines[at[1]], lines[at[0]]
	if err := os.WriteFile(s.cfgPath, []byte(strings.Join(lines, "\n")), 0o600); err != nil {
		s.t.Fatal(err)
	}
	s.writeHAProxyConfig()
}
