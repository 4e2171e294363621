package api

import (
	"context"
	"sync"
	"time"

	"github.com/stickyd/stickyd/agent"
	"github.com/stickyd/stickyd/store"
)

// countCache keeps each backend's binding counts for a short while, so a
// dashboard polling GET /v1/backends costs the store one CountByServer per
// backend per period. Writes through this API drop the entry, so they show
// at once; bindings made by agents show within the period.
type countCache struct {
	store   store.Store
	conn    store.ConnectedCounter // nil: connected counts unknown
	ttl     time.Duration
	entries map[string]*countEntry // one per configured backend; fixed
}

type countEntry struct {
	// mu is held during the store call, so concurrent readers wait for
	// one fetch instead of each issuing their own.
	mu     sync.Mutex
	valid  bool
	at     time.Time
	counts map[string]int
	conn   map[string]int // nil when unknown
}

func newCountCache(a *agent.Agent, st store.Store, conn store.ConnectedCounter, ttl time.Duration) *countCache {
	cc := &countCache{store: st, conn: conn, ttl: ttl, entries: map[string]*countEntry{}}
	for _, b := range a.Backends() {
		cc.entries[b.Name] = &countEntry{}
	}
	return cc
}

// get returns the counts of a configured backend. The map is shared:
// callers must not modify it.
func (cc *countCache) get(ctx context.Context, backend string) (counts, conn map[string]int, err error) {
	e := cc.entries[backend]
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.valid && time.Since(e.at) < cc.ttl {
		return e.counts, e.conn, nil
	}
	if cc.conn != nil {
		counts, conn, err = cc.conn.CountConnected(ctx, backend)
	} else {
		counts, err = cc.store.CountByServer(ctx, backend)
	}
	if err != nil {
		return nil, nil, err
	}
	e.counts, e.conn, e.at, e.valid = counts, conn, time.Now(), true
	return counts, conn, nil
}

func (cc *countCache) invalidate(backend string) {
	e := cc.entries[backend]
	e.mu.Lock()
	e.valid = false
	e.mu.Unlock()
}
