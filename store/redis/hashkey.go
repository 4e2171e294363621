package redis

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math/bits"

	goredis "github.com/redis/go-redis/v9"
)

// The bucket of a client id is keyed: SipHash-2-4 under a 128-bit key that
// every agent sharing the Redis reads from <Prefix>hashkey. An unkeyed hash
// let a client choose ids that all land in one bucket (a hash flood: every
// script on that bucket then walks all of them). The first agent to find
// no key creates a random one with SET NX, so all agree on it.

// hashKeyName is the key holding the hash key, after the prefix.
const hashKeyName = "hashkey"

type sipKey struct{ k0, k1 uint64 }

// sipHash is SipHash-2-4 (Aumasson and Bernstein, 2012) of p under k.
func sipHash(k sipKey, p string) uint64 {
	v0 := k.k0 ^ 0x736f6d6570736575
	v1 := k.k1 ^ 0x646f72616e646f6d
	v2 := k.k0 ^ 0x6c7967656e657261
	v3 := k.k1 ^ 0x7465646279746573
	round := func() {
		v0 += v1
		v1 = bits.RotateLeft64(v1, 13) ^ v0
		v0 = bits.RotateLeft64(v0, 32)
		v2 += v3
		v3 = bits.RotateLeft64(v3, 16) ^ v2
		v0 += v3
		v3 = bits.RotateLeft64(v3, 21) ^ v0
		v2 += v1
		v1 = bits.RotateLeft64(v1, 17) ^ v2
		v2 = bits.RotateLeft64(v2, 32)
	}
	n := len(p)
	for ; len(p) >= 8; p = p[8:] {
		m := uint64(p[0]) | uint64(p[1])<<8 | uint64(p[2])<<16 | uint64(p[3])<<24 |
			uint64(p[4])<<32 | uint64(p[5])<<40 | uint64(p[6])<<48 | uint64(p[7])<<56
		v3 ^= m
		round()
		round()
		v0 ^= m
	}
	m := uint64(n) << 56
	for i := len(p) - 1; i >= 0; i-- {
		m |= uint64(p[i]) << (8 * i)
	}
	v3 ^= m
	round()
	round()
	v0 ^= m
	v2 ^= 0xff
	round()
	round()
	round()
	round()
	return v0 ^ v1 ^ v2 ^ v3
}

// bucketOf spreads client ids over the buckets.
func bucketOf(k sipKey, clientID string) uint32 {
	return uint32(sipHash(k, clientID)) & (1<<bucketBits - 1)
}

func parseHashKey(v string) (sipKey, error) {
	b, err := hex.DecodeString(v)
	if err != nil || len(b) != 16 {
		return sipKey{}, fmt.Errorf("holds %d bytes that are not 32 hex digits", len(v))
	}
	return sipKey{binary.LittleEndian.Uint64(b[:8]), binary.LittleEndian.Uint64(b[8:])}, nil
}

func (k sipKey) String() string {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], k.k0)
	binary.LittleEndian.PutUint64(b[8:], k.k1)
	return hex.EncodeToString(b[:])
}

// hashKey returns the shared hash key, reading it from Redis (or creating
// it) on first use: New does not wait for Redis.
func (s *Store) hashKey(ctx context.Context) (sipKey, error) {
	if k := s.hk.Load(); k != nil {
		return *k, nil
	}
	s.hkMu.Lock()
	defer s.hkMu.Unlock()
	if k := s.hk.Load(); k != nil {
		return *k, nil
	}
	k, err := s.loadHashKey(ctx, nil)
	if err != nil {
		return sipKey{}, err
	}
	s.hk.Store(&k)
	return k, nil
}

// loadHashKey reads the key; when there is none it sets mine (or, when
// mine is nil, a random one) with SET NX and reads what won.
func (s *Store) loadHashKey(ctx context.Context, mine *sipKey) (sipKey, error) {
	name := s.prefix + hashKeyName
	v, err := s.rdb.Get(ctx, name).Result()
	if errors.Is(err, goredis.Nil) {
		if mine == nil {
			var b [16]byte
			_, _ = rand.Read(b[:]) // never fails (crypto/rand)
			k := sipKey{binary.LittleEndian.Uint64(b[:8]), binary.LittleEndian.Uint64(b[8:])}
			mine = &k
		}
		if err := s.rdb.SetNX(ctx, name, mine.String(), 0).Err(); err != nil {
			return sipKey{}, fmt.Errorf("create hash key %s: %w", name, s.classify(err))
		}
		v, err = s.rdb.Get(ctx, name).Result()
	}
	if err != nil {
		return sipKey{}, fmt.Errorf("read hash key %s: %w", name, err)
	}
	k, err := parseHashKey(v)
	if err != nil {
		return sipKey{}, fmt.Errorf("hash key %s %w", name, err)
	}
	return k, nil
}

// checkHashKey, run by Ping, puts the key back if it went (FLUSHALL, a
// lost failover write): every agent still holds the same key, so whichever
// restores it restores the one all use. A different key found there (an
// agent started while it was missing) is adopted, so agents converge.
func (s *Store) checkHashKey(ctx context.Context) error {
	cur := s.hk.Load()
	if cur == nil {
		_, err := s.hashKey(ctx)
		return err
	}
	k, err := s.loadHashKey(ctx, cur)
	if err != nil {
		return err
	}
	if k != *cur {
		s.log.Warn("redis: the shared hash key changed; bindings placed under the old one are no longer read", "key", s.prefix+hashKeyName)
		s.hk.Store(&k)
	}
	return nil
}

// bucket is the hash that holds the client's binding.
func (s *Store) bucket(ctx context.Context, backend, clientID string) (string, error) {
	k, err := s.hashKey(ctx)
	if err != nil {
		return "", err
	}
	return s.bucketKey(k, backend, clientID), nil
}

// bucketKey is bucket with the hash key in hand.
func (s *Store) bucketKey(k sipKey, backend, clientID string) string {
	const hexDigits = "0123456789abcdef"
	n := bucketOf(k, clientID)
	return s.bucketPrefix(backend) + string([]byte{hexDigits[n>>12&15], hexDigits[n>>8&15], hexDigits[n>>4&15], hexDigits[n&15]})
}
