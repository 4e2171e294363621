// Package hashflood makes client ids that all fall into one bucket of
// stickyd's first Redis key layout (the low 16 bits of unkeyed FNV-1a 32),
// for tests showing that the keyed buckets of the current layout spread
// them.
package hashflood

import "fmt"

// FNVBucket is the bucket of the first key layout: FNV-1a 32 of the id,
// low 16 bits.
func FNVBucket(id string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(id); i++ {
		h ^= uint32(id[i])
		h *= 16777619
	}
	return h & 0xffff
}

// IDs returns n distinct ids "<prefix><i>-<3 chars>" whose FNVBucket is 0.
// The low 16 bits of FNV-1a depend only on the low 16 bits of the state
// (xor with a byte and multiplication mod 2^16), so a suffix found for one
// state works for every id reaching it; suffixes are memoised by state.
func IDs(prefix string, n int) []string {
	memo := map[uint32]string{}
	out := make([]string, 0, n)
	for i := range n {
		base := fmt.Sprintf("%s%d-", prefix, i)
		st := state(base)
		suf, ok := memo[st]
		if !ok {
			suf = find(st)
			memo[st] = suf
		}
		out = append(out, base+suf)
	}
	return out
}

func state(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return h & 0xffff
}

// find returns three printable characters taking the low 16 bits of the
// state st to 0. Some always exist in practice (857,375 tries for 65,536
// targets); it panics if not.
func find(st uint32) string {
	for a := byte(33); a < 127; a++ {
		ha := (st ^ uint32(a)) * 16777619
		for b := byte(33); b < 127; b++ {
			hb := (ha ^ uint32(b)) * 16777619
			for c := byte(33); c < 127; c++ {
				if ((hb^uint32(c))*16777619)&0xffff == 0 {
					return string([]byte{a, b, c})
				}
			}
		}
	}
	panic(fmt.Sprintf("hashflood: no 3-character suffix from state %#x", st))
}
