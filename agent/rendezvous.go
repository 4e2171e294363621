package agent

import "math"

// Weighted rendezvous (highest random weight) hashing. Every agent computes
// the same choice from the key and the server names alone, so independent
// agents agree on a new client's server even without a shared store, and a
// server going down only moves the keys that were on it.

const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

// hashKey is FNV-1a 64: stable across processes and versions, unlike
// hash/maphash whose seed is random per process.
func hashKey(b []byte) uint64 {
	h := uint64(fnvOffset)
	for _, c := range b {
		h ^= uint64(c)
		h *= fnvPrime
	}
	return h
}

// mix64 is splitmix64's finaliser: it spreads FNV's weak low bits.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// score is -w/ln(u) with u uniform in (0,1): the standard weighted
// rendezvous score, under which a server wins in proportion to its weight.
func score(h, seed uint64, weight float64) float64 {
	u := (float64(mix64(h^seed)>>11) + 0.5) / (1 << 53)
	return -weight / math.Log(u)
}

// rendezvous returns the index of the eligible server with the highest
// score, or -1 when none is eligible.
func (b *Backend) rendezvous(h uint64, eligible func(int) bool) int {
	best, bestScore := -1, 0.0
	for i := range b.Servers {
		if !eligible(i) {
			continue
		}
		if s := score(h, b.seeds[i], b.weights[i]); best < 0 || s > bestScore {
			best, bestScore = i, s
		}
	}
	return best
}
