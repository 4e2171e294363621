package redis

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/stickyd/stickyd/store"
)

// bucketBits sizes the hash buckets of a backend: 65536 of them. It is
// part of the key layout: every agent sharing a Redis must agree on it.
const bucketBits = 16

// bucketPrefix starts every bucket key of a backend. "b:" is the second
// key layout (keyed buckets, see hashkey.go); the first, "h:", is not read.
func (s *Store) bucketPrefix(backend string) string { return s.prefix + "b:" + backend + ":" }

// invMessage names a binding on the invalidation channel.
func invMessage(backend, clientID string) string { return backend + ":" + clientID }

func (s *Store) drainKey(backend string) string { return s.prefix + "drain:" + backend }

func checkBackend(backend string) error {
	if strings.IndexByte(backend, ':') >= 0 {
		return ErrBackendName
	}
	return nil
}

func checkServer(server string) error {
	if strings.HasPrefix(server, "!") {
		return ErrServerName
	}
	return nil
}

// millis rounds a TTL up to whole milliseconds; 0 means no expiry.
func millis(ttl time.Duration) int64 {
	if ttl <= 0 {
		return 0
	}
	return int64((ttl + time.Millisecond - 1) / time.Millisecond)
}

// parseClaim reads a claim or move reply (see scripts.go) and records
// whether Redis took the write it needed.
func (s *Store) parseClaim(reply string) (store.Claim, error) {
	if len(reply) == 0 || reply[0] < '0' || reply[0] > '3' {
		return store.Claim{}, fmt.Errorf("unexpected script reply %.20q", reply)
	}
	server, pinned := decodeServer(reply[1:])
	c := store.Claim{Server: server, Pinned: pinned}
	switch reply[0] {
	case '1':
		c.Claimed = true
		s.wrote()
	case '2':
		s.readOnly.Store(true) // the binding's TTL could not be reset
	case '3':
		c.NotStored = true
	}
	return c, nil
}

// GetOrClaim implements store.Store in one round trip.
func (s *Store) GetOrClaim(ctx context.Context, backend, clientID, proposed string, ttl time.Duration) (store.Claim, error) {
	if err := errors.Join(checkBackend(backend), checkServer(proposed)); err != nil {
		return store.Claim{}, fmt.Errorf("redis get-or-claim: %w", err)
	}
	var t ticket
	if s.cache != nil {
		t = s.cache.take(backend, clientID)
	}
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	key, err := s.bucket(ctx, backend, clientID)
	if err != nil {
		return store.Claim{}, fmt.Errorf("redis get-or-claim: %w", err)
	}
	room, reserved := s.reserve(backend)
	fields := 0 // no room under MaxBindings: no new field
	if reserved {
		fields = maxBucketFields
	}
	c, err := s.claim(ctx, key, clientID, proposed, ttl, fields)
	if reserved && room != nil {
		room.done(c.Claimed)
	}
	if err != nil {
		return store.Claim{}, fmt.Errorf("redis get-or-claim: %w", err)
	}
	if s.cache != nil && !c.NotStored {
		s.cache.fill(t, clientID, c, ttl)
	}
	return c, nil
}

// claim runs the claim script; fields is the most a bucket may hold for a
// new binding to be stored.
func (s *Store) claim(ctx context.Context, key, clientID, proposed string, ttl time.Duration, fields int) (store.Claim, error) {
	reply, err := claimScript.Run(ctx, s.rdb, []string{key}, clientID, proposed, millis(ttl), fields).Text()
	if err != nil {
		return store.Claim{}, s.classify(err)
	}
	return s.parseClaim(reply)
}

// Move implements store.Store in one round trip. Claimed is true when the
// compare-and-swap applied (even if from == to) or the binding was created.
func (s *Store) Move(ctx context.Context, backend, clientID, from, to string, ttl time.Duration) (store.Claim, error) {
	if err := errors.Join(checkBackend(backend), checkServer(from), checkServer(to)); err != nil {
		return store.Claim{}, fmt.Errorf("redis move: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	key, err := s.bucket(ctx, backend, clientID)
	if err != nil {
		return store.Claim{}, fmt.Errorf("redis move: %w", err)
	}
	reply, err := moveScript.Run(ctx, s.rdb, []string{key},
		clientID, from, to, millis(ttl), s.channel, invMessage(backend, clientID)).Text()
	s.forgetLocal(backend, clientID)
	if err != nil {
		return store.Claim{}, fmt.Errorf("redis move: %w", s.classify(err))
	}
	c, err := s.parseClaim(reply)
	if err != nil {
		return store.Claim{}, fmt.Errorf("redis move: %w", err)
	}
	return c, nil
}

// forgetLocal drops a binding this store changed (or may have: the call
// failed after Redis ran it) from the local cache at once; other agents'
// caches learn of it over pub/sub.
func (s *Store) forgetLocal(backend, clientID string) {
	if s.cache != nil {
		s.cache.forget(backend, clientID)
	}
}

// Get implements store.Store.
func (s *Store) Get(ctx context.Context, backend, clientID string) (store.Binding, error) {
	if err := checkBackend(backend); err != nil {
		return store.Binding{}, fmt.Errorf("redis get: %w", err)
	}
	key, err := s.bucket(ctx, backend, clientID)
	if err != nil {
		return store.Binding{}, fmt.Errorf("redis get: %w", err)
	}
	res, err := getScript.Run(ctx, s.rdb, []string{key}, clientID).Slice()
	if errors.Is(err, goredis.Nil) {
		return store.Binding{}, store.ErrNotFound
	}
	if err != nil {
		return store.Binding{}, fmt.Errorf("redis get: %w", err)
	}
	var v string
	var pttl, conn int64
	ok := len(res) == 3
	if ok {
		v, ok = res[0].(string)
	}
	if ok {
		pttl, ok = res[1].(int64)
	}
	if ok {
		conn, ok = res[2].(int64)
	}
	if !ok {
		return store.Binding{}, fmt.Errorf("redis get: unexpected script reply %.80v", res)
	}
	b := store.Binding{Backend: backend, ClientID: clientID, Connected: conn == 1}
	b.Server, b.Pinned = decodeServer(v)
	if pttl > 0 {
		b.TTL = time.Duration(pttl) * time.Millisecond
	}
	return b, nil
}

// Put implements store.Store.
func (s *Store) Put(ctx context.Context, b store.Binding) error {
	if err := errors.Join(checkBackend(b.Backend), checkServer(b.Server)); err != nil {
		return fmt.Errorf("redis put: %w", err)
	}
	key, err := s.bucket(ctx, b.Backend, b.ClientID)
	if err != nil {
		return fmt.Errorf("redis put: %w", err)
	}
	err = putScript.Run(ctx, s.rdb, []string{key},
		b.ClientID, encodeServer(b.Server, b.Pinned), millis(b.TTL), s.channel, invMessage(b.Backend, b.ClientID)).Err()
	s.forgetLocal(b.Backend, b.ClientID)
	if err != nil {
		return fmt.Errorf("redis put: %w", s.classify(err))
	}
	s.wrote()
	return nil
}

// Delete implements store.Store.
func (s *Store) Delete(ctx context.Context, backend, clientID string) error {
	if err := checkBackend(backend); err != nil {
		return fmt.Errorf("redis delete: %w", err)
	}
	key, err := s.bucket(ctx, backend, clientID)
	if err != nil {
		return fmt.Errorf("redis delete: %w", err)
	}
	n, err := delScript.Run(ctx, s.rdb, []string{key}, clientID, s.channel, invMessage(backend, clientID)).Int()
	s.forgetLocal(backend, clientID)
	if err != nil {
		return fmt.Errorf("redis delete: %w", s.classify(err))
	}
	if n == 0 {
		return store.ErrNotFound
	}
	return nil
}

// SetDraining implements store.Store.
func (s *Store) SetDraining(ctx context.Context, backend, server string, draining bool) error {
	if err := checkBackend(backend); err != nil {
		return fmt.Errorf("redis set-draining: %w", err)
	}
	var err error
	if draining {
		err = s.rdb.SAdd(ctx, s.drainKey(backend), server).Err()
	} else {
		err = s.rdb.SRem(ctx, s.drainKey(backend), server).Err()
	}
	if err != nil {
		return fmt.Errorf("redis set-draining: %w", s.classify(err))
	}
	return nil
}

// Draining implements store.Store.
func (s *Store) Draining(ctx context.Context, backend string) (map[string]bool, error) {
	if err := checkBackend(backend); err != nil {
		return nil, fmt.Errorf("redis draining: %w", err)
	}
	members, err := s.rdb.SMembers(ctx, s.drainKey(backend)).Result()
	if err != nil {
		return nil, fmt.Errorf("redis draining: %w", err)
	}
	out := make(map[string]bool, len(members))
	for _, m := range members {
		out[m] = true
	}
	return out, nil
}
