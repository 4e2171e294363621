package e2e

import (
	"fmt"
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
func TestReloadWithAgentDown(t *testing.T) {
	for _, tc := range []struct {
		name string
		peer bool
	}{{"local_peer", true}, {"no local_peer", false}} {
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
			s.reload()
			again := s.connectAll(clients)
			moved := 0
			for _, id := range clients {
				if again[id] != placed[id] {
					moved++
				}
			}
			t.Logf("agent down, HAProxy reloaded: %d of %d clients moved (%d placed apart from the fail-open placement)", moved, len(clients), wantMoved)
			if tc.peer && moved != 0 {
				t.Fatalf("%d clients moved through a reload with local_peer", moved)
			}
			if tc.peer {
				// A process that was taught passes the tables on at once.
				s.reload()
				for id, n := range s.connectAll(clients) {
					if n != placed[id] {
						t.Fatalf("second reload at once: %s moved from %s to %s", id, placed[id], n)
					}
				}
			}
			if !tc.peer && moved != wantMoved {
				t.Fatalf("without local_peer %d clients moved, want %d", moved, wantMoved)
			}
		})
	}
}
