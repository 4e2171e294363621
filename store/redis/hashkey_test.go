package redis

import (
	"context"
	"testing"
)

// keyOf is the bucket of an id, the hash key read from Redis.
func keyOf(t testing.TB, s *Store, backend, id string) string {
	t.Helper()
	k, err := s.bucket(context.Background(), backend, id)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// The reference vectors of SipHash-2-4 (the paper's appendix A and the
// reference implementation's vectors.h): key 00..0f, messages 00..n-1.
func TestSipHashVectors(t *testing.T) {
	k, err := parseHashKey("000102030405060708090a0b0c0d0e0f")
	if err != nil {
		t.Fatal(err)
	}
	msg := make([]byte, 64)
	for i := range msg {
		msg[i] = byte(i)
	}
	for _, tc := range []struct {
		n    int
		want uint64
	}{
		{0, 0x726fdb47dd0e0e31},
		{1, 0x74f839c593dc67fd},
		{7, 0xab0200f58b01d137},
		{8, 0x93f5f5799a932462},
		{15, 0xa129ca6149be45e5},
	} {
		if got := sipHash(k, string(msg[:tc.n])); got != tc.want {
			t.Errorf("SipHash-2-4 of %d bytes = %#x, want %#x", tc.n, got, tc.want)
		}
	}
	if k.String() != "000102030405060708090a0b0c0d0e0f" {
		t.Errorf("key round trip = %s", k)
	}
	for _, bad := range []string{"", "00", "000102030405060708090a0b0c0d0e0g", "000102030405060708090a0b0c0d0e0f00"} {
		if _, err := parseHashKey(bad); err == nil {
			t.Errorf("parseHashKey(%q) accepted", bad)
		}
	}
}
