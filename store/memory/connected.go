package memory

import (
	"context"
	"fmt"
	"time"

	"github.com/stickyd/stickyd/store"
)

var (
	_ store.Toucher          = (*Store)(nil)
	_ store.ConnectedCounter = (*Store)(nil)
)

// TouchConnected implements store.Toucher under the read lock: expiry and
// the connected mark are atomics, as in a claim's TTL reset.
func (s *Store) TouchConnected(ctx context.Context, backendName string, touches []store.Touch, connected time.Duration) (int, error) {
	b := s.backend(backendName)
	if b == nil {
		return 0, nil
	}
	now := s.nowNs()
	until := expiry(now, connected)
	n := 0
	b.mu.RLock()
	defer b.mu.RUnlock()
	for _, t := range touches {
		it, ok := b.tree.Get(item{id: t.ClientID})
		if !ok || !it.e.live(now) {
			continue // evicted or expired: never re-created
		}
		n++
		it.e.conn.Store(until)
		if cur := it.e.expires.Load(); cur != 0 && t.TTL > 0 {
			if exp := expiry(now, t.TTL); exp > cur {
				it.e.expires.Store(exp)
				b.noteExpiry(exp)
			}
		}
	}
	return n, nil
}

// CountConnected implements store.ConnectedCounter: one walk in bounded
// read-lock holds.
func (s *Store) CountConnected(ctx context.Context, backendName string) (bindings, connected map[string]int, err error) {
	bindings, connected = map[string]int{}, map[string]int{}
	b := s.backend(backendName)
	if b == nil {
		return bindings, connected, nil
	}
	err = b.chunks(ctx, s.nowNs, func(it item, now int64) bool {
		if it.e.live(now) {
			bindings[it.e.server]++
			if it.e.conn.Load() > now {
				connected[it.e.server]++
			}
		}
		return false
	}, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("memory count: %w", err)
	}
	return bindings, connected, nil
}
