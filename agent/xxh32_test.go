package agent

import "testing"

// Reference values: the xxHash project's sanity checks (xsum_sanity_check.c,
// a buffer of 2654435761-driven pseudo-random bytes) and well-known short
// strings, plus values HAProxy 2.4.0, 2.6.12 and 3.4.0 printed for
// str(abc),xxh32(seed).
func TestXXH32Vectors(t *testing.T) {
	sanity := make([]byte, 222)
	gen := uint64(2654435761)
	for i := range sanity {
		sanity[i] = byte(gen >> 56)
		gen *= 11400714785074694797
	}
	for _, tc := range []struct {
		in   []byte
		seed uint32
		want uint32
	}{
		{nil, 0, 0x02CC5D05},
		{nil, 2654435761, 0x36B78AE7},
		{sanity[:1], 0, 0xCF65B03E},
		{sanity[:1], 2654435761, 0xB4545AA4},
		{sanity[:14], 0, 0x1208E7E2},
		{sanity[:14], 2654435761, 0x6AF1D1FE},
		{sanity[:222], 0, 0x5BD11DBD},
		{sanity[:222], 2654435761, 0x58803C5F},
		{[]byte("abc"), 0, 0x32D153FF},
		{[]byte("abc"), 4294967295, 2989167648},
		{[]byte("abc"), 12345, 1853483049},
	} {
		if got := xxh32(tc.in, tc.seed); got != tc.want {
			t.Errorf("xxh32(%d bytes, %d) = %#x, want %#x", len(tc.in), tc.seed, got, tc.want)
		}
	}
}
