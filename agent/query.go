package agent

import (
	"fmt"
	"time"
)

// MaxServers is the most servers one backend may have (the Query keeps
// server states in fixed bitsets so the hot path does not allocate).
const MaxServers = 256

// Outcome says how a Decision was reached.
type Outcome int

// Outcomes, also used as metric labels.
const (
	OutcomeNoKey          Outcome = iota // no client key: no answer
	OutcomeUnknownBackend                // backend not configured: no answer
	OutcomeNoServer                      // every server down: no answer
	OutcomeExisting                      // existing binding to a live server
	OutcomePlaced                        // new client, binding claimed
	OutcomeMoved                         // binding moved off a down server
	OutcomePinnedDown                    // pinned to a down server: routed elsewhere, binding kept
	OutcomeFallback                      // store failed: rendezvous answer
	OutcomeNotStored                     // new client past max_bindings: rendezvous answer, not stored
	numOutcomes
)

var outcomeNames = [...]string{"no_key", "unknown_backend", "no_server", "existing", "placed", "moved", "pinned_down", "fallback", "not_stored"}

func (o Outcome) String() string {
	if o < 0 || int(o) >= len(outcomeNames) {
		return fmt.Sprintf("outcome(%d)", int(o))
	}
	return outcomeNames[o]
}

// Outcomes lists every outcome, for metrics.
func Outcomes() []Outcome {
	out := make([]Outcome, numOutcomes)
	for i := range out {
		out[i] = Outcome(i)
	}
	return out
}

// Decision is the agent's answer. Server is empty when there is none.
type Decision struct {
	Server  string
	Outcome Outcome
}

// Query is one connection to decide. Byte slices may alias a network
// buffer: Decide copies what it keeps.
type Query struct {
	Backend  string
	ClientID []byte
	Username []byte
	// CertCN is the CN of the verified client certificate (TLS listeners).
	CertCN []byte
	// SessionExpiry is the MQTT 5 session expiry interval, 0 when absent.
	SessionExpiry time.Duration

	up, known bitset
	seen      int // index + 1 of the server HAProxy last routed to; 0: none
}

// SetSeen records the server (index i) HAProxy's own table routed this
// client to, while the agent was down or before it lost its bindings. A
// client with no binding adopts it if eligible, instead of being moved by
// rendezvous.
func (q *Query) SetSeen(i int) {
	if i >= 0 && i < MaxServers {
		q.seen = i + 1
	}
}

// SetUp records HAProxy's view of the server at index i (see
// Backend.ServerIndex). Servers never set count as up.
func (q *Query) SetUp(i int, up bool) {
	if i < 0 || i >= MaxServers {
		return
	}
	q.known.set(i, true)
	q.up.set(i, up)
}

// Reset clears the query for reuse.
func (q *Query) Reset() { *q = Query{} }

func (q *Query) isUp(i int) bool { return !q.known.get(i) || q.up.get(i) }

type bitset [MaxServers / 64]uint64

func (b *bitset) set(i int, v bool) {
	if v {
		b[i/64] |= 1 << (uint(i) % 64)
	} else {
		b[i/64] &^= 1 << (uint(i) % 64)
	}
}
func (b *bitset) get(i int) bool { return b[i/64]&(1<<(uint(i)%64)) != 0 }
