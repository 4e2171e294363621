package agent

// Fail-open placement: weighted rendezvous (highest random weight) hashing
// that HAProxy can compute too. Every agent, and every HAProxy whose agent
// is down (haproxy/templates/failopen.cfg.tmpl), computes the same choice
// from the key bytes and the server names and weights alone, so a new
// client lands on the same node whoever answers without the store, and a
// server going down only moves the keys that were on it.
//
// The function, on both sides:
//   - server s with weight w has w draws; draw j has the seed
//     xxh32(name(s), j), computed once (at generation time for HAProxy);
//   - a key's score for s is the best of xxh32(key, seed) over its draws,
//     so P(s wins) = w / Σw exactly (the best of w uniform draws);
//   - the eligible server with the highest score wins; on an exact tie the
//     one listed first (HAProxy ranks score·512 + 256 - index).
//
// Golden values over fixed ids (testdata/failopen-golden.txt) pin it:
// agent.TestFailOpenGolden and the e2e TestFailOpenGoldenOnHAProxy.

// DrawSeeds returns the xxh32 seeds of a server's weight draws.
func DrawSeeds(name string, weight int) []uint32 {
	out := make([]uint32, weight)
	for j := range out {
		out[j] = xxh32([]byte(name), uint32(j))
	}
	return out
}

// FailOpenScore is a key's score for one server: the best of its draws.
func FailOpenScore(key []byte, seeds []uint32) uint32 {
	var best uint32
	for _, s := range seeds {
		if h := xxh32(key, s); h > best {
			best = h
		}
	}
	return best
}

// rendezvous returns the index of the eligible server with the highest
// score (the first listed on a tie), or -1 when none is eligible.
func (b *Backend) rendezvous(key []byte, eligible func(int) bool) int {
	best := -1
	var bestScore uint32
	for i := range b.Servers {
		if !eligible(i) {
			continue
		}
		if s := FailOpenScore(key, b.seeds[i]); best < 0 || s > bestScore {
			best, bestScore = i, s
		}
	}
	return best
}
