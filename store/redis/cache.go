package redis

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/stickyd/stickyd/store"
)

// The local cache answers a reconnect from process memory: no Redis round
// trip on the connect path of a client seen recently. It holds unpinned
// bindings of ids up to CacheMaxIDLen bytes only, at most Options.CacheSize
// of them.
//
// Coherence. Every script that changes or removes a binding (move, put,
// delete, compare-and-delete) publishes "<backend>:<client id>" on the
// channel <Prefix>inv in the same atomic step; every Store subscribes and
// drops what it holds for that binding. The cache answers only while the subscription
// is up: when it drops (Redis restarts, fails over, or the connection
// breaks) the cache is emptied and stays unused until the subscription is
// back. A lookup that started before an invalidation cannot fill the cache
// after it (the shard's generation changed).
//
// Refreshes. A hit whose entry Redis has not confirmed for refreshEvery
// (ttl/16, between 100ms and 30s) queues a refresh: a background goroutine
// pipelines them, each a script that resets the TTL if the binding is still
// the cached one and never creates a binding (so it cannot undo an
// eviction). An entry not confirmed for twice refreshEvery is dropped, so
// whatever went unseen (a FLUSHDB, a write lost in a failover) lasts at most
// that long in any agent, and the binding's TTL in Redis stays within
// 2 x refreshEvery of the full ttl after every connect.

// Cache defaults and bounds.
const (
	minRefresh  = 100 * time.Millisecond
	maxRefresh  = 30 * time.Second
	cacheShards = 64
	// refreshBatch bounds the refreshes one pipeline carries.
	refreshBatch = 256
	// refreshQueue bounds queued refreshes; past it a hit is not refreshed
	// now (the next hit after refreshEvery tries again).
	refreshQueue = 8192
	// CacheMaxIDLen is the longest client id the cache holds: longer ids
	// always go to Redis. It bounds an entry, map slot included, to about
	// 230 bytes (measured: TestCacheBoundedInBytes), so the cache to about
	// 23 MiB for the default 100000 entries, whatever ids clients send.
	CacheMaxIDLen = 64
	// pingEvery is how long the subscriber waits for a message before it
	// pings; no answer by the next wait means the connection is dead.
	pingEvery = 5 * time.Second
)

// refreshEvery is how long an entry stands without Redis confirming it.
func refreshEvery(ttl time.Duration) time.Duration {
	if ttl <= 0 {
		return maxRefresh
	}
	return min(max(ttl/16, minRefresh), maxRefresh)
}

// CacheStats counts what the local cache did.
// CacheStats is the store-wide type.
type CacheStats = store.CacheStats

type cache struct {
	capacity int // per shard
	prefix   string
	seed     maphash.Seed
	now      func() time.Time

	enabled  atomic.Bool
	backends atomic.Pointer[map[string]*cacheBackend]
	names    sync.Map // server name -> its one copy
	addMu    sync.Mutex

	refreshes chan refreshReq

	psMu sync.Mutex
	ps   *goredis.PubSub // the current subscription, closed by stop
	done bool

	hits, misses, invalidations, refreshCount, refreshErrors, resets atomic.Uint64

	// onChange, when set, hears every invalidation (SetOnChange).
	onChange atomic.Pointer[func(backend, clientID string)]
}

type cacheBackend struct {
	shards [cacheShards]cacheShard
}

type cacheShard struct {
	mu sync.Mutex
	// gen changes with every invalidation and reset that touches the shard:
	// a fill carries the gen it read before asking Redis, and is refused if
	// the gen moved meanwhile.
	gen uint64
	m   map[string]cacheEntry
}

// cacheEntry is held by value in its shard's map: no allocation of its own.
type cacheEntry struct {
	server     string        // interned
	ttl        time.Duration // of the last claim or refresh
	confirmed  int64         // unix ns: Redis last returned this binding
	refreshing bool
}

// stale reports whether the entry has gone unconfirmed too long to answer.
func (e *cacheEntry) stale(now int64) bool {
	return now-e.confirmed > 2*int64(refreshEvery(e.ttl))
}

// ticket is taken before a Redis call whose answer may fill the cache.
type ticket struct {
	sh  *cacheShard
	gen uint64
	ok  bool
}

type refreshReq struct {
	backend, id, server string
	ttl                 time.Duration
	gen                 uint64
}

func newCache(size int, prefix string) *cache {
	c := &cache{
		capacity:  max(size/cacheShards, 1),
		prefix:    prefix,
		seed:      maphash.MakeSeed(),
		now:       time.Now,
		refreshes: make(chan refreshReq, refreshQueue),
	}
	m := map[string]*cacheBackend{}
	c.backends.Store(&m)
	return c
}

func (c *cache) backend(name string, create bool) *cacheBackend {
	if b := (*c.backends.Load())[name]; b != nil || !create {
		return b
	}
	c.addMu.Lock()
	defer c.addMu.Unlock()
	old := *c.backends.Load()
	if b := old[name]; b != nil {
		return b
	}
	m := make(map[string]*cacheBackend, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	b := &cacheBackend{}
	for i := range b.shards {
		b.shards[i].m = map[string]cacheEntry{}
	}
	m[name] = b
	c.backends.Store(&m)
	return b
}

func (c *cache) shard(b *cacheBackend, id string) *cacheShard {
	return &b.shards[maphash.String(c.seed, id)%cacheShards]
}

// lookup answers from the cache, queueing a refresh when one is due.
func (c *cache) lookup(backend string, id []byte, ttl time.Duration) (store.Claim, bool) {
	if !c.enabled.Load() {
		c.misses.Add(1)
		return store.Claim{}, false
	}
	b := c.backend(backend, false)
	if b == nil {
		c.misses.Add(1)
		return store.Claim{}, false
	}
	sh := &b.shards[maphash.Bytes(c.seed, id)%cacheShards]
	now := c.now().UnixNano()
	sh.mu.Lock()
	e, ok := sh.m[string(id)]
	if !ok || e.stale(now) {
		if ok {
			delete(sh.m, string(id))
		}
		sh.mu.Unlock()
		c.misses.Add(1)
		return store.Claim{}, false
	}
	server := e.server
	due := !e.refreshing && (now-e.confirmed >= int64(refreshEvery(e.ttl)) || ttl > e.ttl)
	if due {
		e.refreshing = true
		sh.m[string(id)] = e
	}
	gen := sh.gen
	sh.mu.Unlock()
	c.hits.Add(1)
	if due {
		select {
		case c.refreshes <- refreshReq{backend: backend, id: string(id), server: server, ttl: ttl, gen: gen}:
		default:
			// Queue full: leave it for a later hit.
			sh.mu.Lock()
			if e, ok := sh.m[string(id)]; ok {
				e.refreshing = false
				sh.m[string(id)] = e
			}
			sh.mu.Unlock()
		}
	}
	return store.Claim{Server: server}, true
}

// take returns a ticket for a fill of (backend, id).
func (c *cache) take(backend, id string) ticket {
	if !c.enabled.Load() {
		return ticket{}
	}
	sh := c.shard(c.backend(backend, true), id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return ticket{sh: sh, gen: sh.gen, ok: true}
}

// fill stores what Redis answered, unless the ticket is stale. Pinned
// bindings are not cached: their TTL is not refreshed by a connect, so an
// entry could outlive them.
func (c *cache) fill(t ticket, id string, claim store.Claim, ttl time.Duration) {
	if !t.ok || !c.enabled.Load() || len(id) > CacheMaxIDLen {
		return
	}
	now := c.now().UnixNano()
	t.sh.mu.Lock()
	defer t.sh.mu.Unlock()
	if claim.Pinned {
		delete(t.sh.m, id)
		return
	}
	if t.sh.gen != t.gen {
		return
	}
	if _, ok := t.sh.m[id]; !ok && len(t.sh.m) >= c.capacity {
		t.sh.evict(now)
	}
	t.sh.m[id] = cacheEntry{server: c.intern(claim.Server), ttl: ttl, confirmed: now}
}

// evict makes room for one entry: a stale one if a few random picks find
// one, else a random one. Caller holds sh.mu.
func (sh *cacheShard) evict(now int64) {
	var victim string
	n := 0
	for k, e := range sh.m { // map order is random
		if victim = k; e.stale(now) || n == 7 {
			break
		}
		n++
	}
	delete(sh.m, victim)
}

// intern shares one copy of each server name among the entries.
func (c *cache) intern(server string) string {
	if v, ok := c.names.Load(server); ok {
		return v.(string)
	}
	v, _ := c.names.LoadOrStore(strings.Clone(server), strings.Clone(server))
	return v.(string)
}

// invalidate drops the binding an invalidation message names,
// "<backend>:<client id>".
func (c *cache) invalidate(msg string) {
	backend, id, ok := strings.Cut(msg, ":")
	if !ok {
		return
	}
	b := c.backend(backend, false)
	if b == nil {
		return
	}
	sh := c.shard(b, id)
	sh.mu.Lock()
	sh.gen++
	delete(sh.m, id)
	sh.mu.Unlock()
	c.invalidations.Add(1)
}

// forget drops a binding this store has just changed, without waiting for
// its own invalidation to come back over pub/sub: the next connect through
// this agent must see the change (a pin, an eviction, a move).
func (c *cache) forget(backend, id string) {
	b := c.backend(backend, false)
	if b == nil {
		return
	}
	sh := c.shard(b, id)
	sh.mu.Lock()
	sh.gen++
	delete(sh.m, id)
	sh.mu.Unlock()
}

// forgetServer drops every cached binding to server (after this store
// deleted them all).
func (c *cache) forgetServer(backend, server string) {
	b := c.backend(backend, false)
	if b == nil {
		return
	}
	for i := range b.shards {
		sh := &b.shards[i]
		sh.mu.Lock()
		sh.gen++
		for id, e := range sh.m {
			if e.server == server {
				delete(sh.m, id)
			}
		}
		sh.mu.Unlock()
	}
}

// reset empties the cache and invalidates every ticket.
func (c *cache) reset() {
	c.resets.Add(1)
	for _, b := range *c.backends.Load() {
		for i := range b.shards {
			sh := &b.shards[i]
			sh.mu.Lock()
			sh.gen++
			clear(sh.m)
			sh.mu.Unlock()
		}
	}
}

func (c *cache) setEnabled(on bool) {
	if !on && !c.enabled.Load() {
		return
	}
	c.enabled.Store(false)
	c.reset()
	if on {
		c.enabled.Store(true)
	}
}

func (c *cache) stats() CacheStats {
	st := CacheStats{
		Hits: c.hits.Load(), Misses: c.misses.Load(), Invalidations: c.invalidations.Load(),
		Refreshes: c.refreshCount.Load(), RefreshErrors: c.refreshErrors.Load(), Resets: c.resets.Load(),
		Enabled: c.enabled.Load(),
	}
	for _, b := range *c.backends.Load() {
		for i := range b.shards {
			sh := &b.shards[i]
			sh.mu.Lock()
			st.Entries += len(sh.m)
			sh.mu.Unlock()
		}
	}
	return st
}

// subscribe keeps the invalidation subscription up until ctx ends; the
// cache answers only while it is.
func (c *cache) subscribe(ctx context.Context, rdb goredis.UniversalClient) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		c.psMu.Lock()
		if c.done {
			c.psMu.Unlock()
			break
		}
		ps := rdb.Subscribe(ctx, c.prefix+invChannel)
		c.ps = ps
		c.psMu.Unlock()
		if c.listen(ctx, ps) {
			backoff = 100 * time.Millisecond
		}
		c.psMu.Lock()
		c.ps = nil
		c.psMu.Unlock()
		_ = ps.Close()
		c.setEnabled(false)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
			backoff = min(2*backoff, 2*time.Second)
		}
	}
	c.setEnabled(false)
}

// stop ends subscribe: a blocked read does not watch its context, so the
// subscription is closed under it.
func (c *cache) stop() {
	c.psMu.Lock()
	defer c.psMu.Unlock()
	c.done = true
	if c.ps != nil {
		_ = c.ps.Close()
	}
}

// listen reads the subscription until it fails; it reports whether the
// subscription had been confirmed.
func (c *cache) listen(ctx context.Context, ps *goredis.PubSub) (confirmed bool) {
	pinged := false
	for {
		msg, err := ps.ReceiveTimeout(ctx, pingEvery)
		if err != nil {
			if ctx.Err() != nil || !isTimeout(err) || pinged || !confirmed {
				return confirmed
			}
			if ps.Ping(ctx) != nil {
				return confirmed
			}
			pinged = true
			continue
		}
		pinged = false
		switch m := msg.(type) {
		case *goredis.Subscription:
			if m.Kind == "subscribe" {
				// Changes made before now were not seen: start empty.
				confirmed = true
				c.setEnabled(true)
			}
		case *goredis.Message:
			c.invalidate(m.Payload)
			if fn := c.onChange.Load(); fn != nil {
				if backend, id, ok := strings.Cut(m.Payload, ":"); ok {
					(*fn)(backend, id)
				}
			}
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// refresher runs queued refreshes until ctx ends, a pipeline at a time.
func (c *cache) refresher(ctx context.Context, s *Store) {
	batch := make([]refreshReq, 0, refreshBatch)
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-c.refreshes:
			batch = append(batch[:0], r)
		}
	more:
		for len(batch) < refreshBatch {
			select {
			case r := <-c.refreshes:
				batch = append(batch, r)
			default:
				break more
			}
		}
		c.refresh(ctx, s, batch)
	}
}

func (c *cache) refresh(ctx context.Context, s *Store, batch []refreshReq) {
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	k := s.hk.Load() // set: entries are filled after a claim
	if k == nil {
		return
	}
	cmds, err := s.runPipelined(ctx, refreshScript, len(batch), func(i int) ([]string, []any) {
		r := batch[i]
		return []string{s.bucketKey(*k, r.backend, r.id)}, []any{r.id, r.server, millis(r.ttl)}
	})
	now := c.now().UnixNano()
	for i, r := range batch {
		c.refreshCount.Add(1)
		var cur string
		rerr := err
		if rerr == nil {
			cur, rerr = cmds[i].Text()
		}
		if rerr != nil {
			c.refreshErrors.Add(1)
		}
		b := c.backend(r.backend, false)
		if b == nil {
			continue
		}
		sh := c.shard(b, r.id)
		sh.mu.Lock()
		e, ok := sh.m[r.id]
		switch {
		case !ok:
		case rerr != nil:
			e.refreshing = false // a later hit retries; the entry ages out meanwhile
			sh.m[r.id] = e
		case cur == r.server && sh.gen == r.gen:
			e.ttl, e.confirmed, e.refreshing = r.ttl, now, false
			sh.m[r.id] = e
		default:
			// Gone, moved or pinned, or invalidated meanwhile: the next
			// connect asks Redis.
			delete(sh.m, r.id)
		}
		sh.mu.Unlock()
	}
}

// invChannel is the invalidation channel, after the prefix.
const invChannel = "inv"

// runPipelined runs n calls of a script in one pipeline (EVALSHA; on
// NOSCRIPT, after a Redis restart or failover, the script is loaded and the
// pipeline sent once more). Each command carries its own result or error.
func (s *Store) runPipelined(ctx context.Context, sc *goredis.Script, n int, args func(i int) ([]string, []any)) ([]*goredis.Cmd, error) {
	for attempt := 0; ; attempt++ {
		pipe := s.rdb.Pipeline()
		cmds := make([]*goredis.Cmd, n)
		for i := range n {
			keys, argv := args(i)
			cmds[i] = sc.EvalSha(ctx, pipe, keys, argv...)
		}
		_, err := pipe.Exec(ctx)
		if attempt == 0 && err != nil && goredis.HasErrorPrefix(err, "NOSCRIPT") {
			if err := s.loadScript(ctx, sc); err != nil {
				return nil, fmt.Errorf("load script: %w", err)
			}
			continue
		}
		return cmds, nil
	}
}

// loadScript loads a script on every master (each has a script cache).
func (s *Store) loadScript(ctx context.Context, sc *goredis.Script) error {
	if s.cluster != nil {
		return s.cluster.ForEachMaster(ctx, func(ctx context.Context, c *goredis.Client) error {
			return sc.Load(ctx, c).Err()
		})
	}
	return sc.Load(ctx, s.rdb).Err()
}
