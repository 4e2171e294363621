package agent

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/stickyd/stickyd/config"
	"github.com/stickyd/stickyd/internal/ratelog"
	"github.com/stickyd/stickyd/internal/tablekey"
	"github.com/stickyd/stickyd/store"
)

// ConnectedSource lists the table keys of clients connected through this
// agent's HAProxy (haproxy.RuntimeAPI).
type ConnectedSource interface {
	ConnectedKeys(ctx context.Context, backend string, batch int, fn func([]tableKey) error) error
}

// tableKey is a client key's key in HAProxy's tables.
type tableKey = tablekey.Key

// connectedBatch bounds the keys read, resolved and written at a time.
const connectedBatch = 512

// rebuildEvery spaces the store walks that resolve keys this agent never
// answered (after a restart, or clients routed by HAProxy's table alone).
const rebuildEvery = time.Minute

// resolveTimeout bounds one such walk.
const resolveTimeout = 5 * time.Minute

// ConnectedEvery is the refresh period for a ttl: a third of it, within
// [500ms, 1m]. A binding's expiry is raised to now+ttl+period at each
// refresh, so it expires between ttl and ttl+period after its client's
// last connection closed.
func ConnectedEvery(ttl time.Duration) time.Duration {
	if ttl <= 0 {
		return time.Minute
	}
	return min(max(ttl/3, 500*time.Millisecond), time.Minute)
}

// Connected keeps the bindings of connected clients alive: every period it
// reads the connected keys from HAProxy in batches, maps each table key
// back to its client id (ids it answered, or found by walking the store)
// and touches the bindings in pipelined, conditional writes.
type Connected struct {
	src   ConnectedSource
	st    store.Store
	touch store.Toucher
	ttl   time.Duration
	every time.Duration
	log   *slog.Logger
	warn  *ratelog.Logger // failures repeat every period: rate-limited
	cap   int             // ids kept per backend

	mu  sync.Mutex
	ids map[string]map[tableKey]known // backend -> key -> id

	lastRebuild map[string]time.Time
}

// known is held by value: 32 bytes beside its 16-byte key and the id.
type known struct {
	id   string
	ttl  time.Duration
	seen int64 // unix ns: last answered or found connected
}

// NewConnected refreshes through src and st (which must be a
// store.Toucher; nil if it is not).
func NewConnected(cfg *config.Config, src ConnectedSource, st store.Store, log *slog.Logger) *Connected {
	t, ok := st.(store.Toucher)
	if !ok {
		return nil
	}
	c := &Connected{src: src, st: st, touch: t, ttl: cfg.TTL.D(), every: ConnectedEvery(cfg.TTL.D()), log: log, warn: ratelog.New(log, ratelog.DefaultEvery),
		cap: cfg.HAProxy.LocalSize, ids: map[string]map[tableKey]known{}, lastRebuild: map[string]time.Time{}}
	for _, b := range cfg.Backends {
		c.ids[b.Name] = map[tableKey]known{}
	}
	return c
}

// Every is the refresh period.
func (c *Connected) Every() time.Duration { return c.every }

// Remember records the id behind a table key: the agent calls it when it
// answers (SetConnected).
// ttl is the binding's TTL (Agent.bindingTTL); 0 means the configured ttl.
func (c *Connected) Remember(backend string, key []byte, ttl time.Duration) {
	if ttl <= 0 {
		ttl = c.ttl
	}
	tk := tablekey.Of(key)
	now := time.Now().UnixNano()
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.ids[backend]
	if m == nil {
		return
	}
	if e, ok := m[tk]; ok {
		e.ttl, e.seen = ttl, now
		m[tk] = e
		return
	}
	if len(m) >= c.cap {
		return // full until the next prune
	}
	m[tk] = known{id: string(key), ttl: ttl, seen: now}
}

// Run refreshes every period until ctx ends.
func (c *Connected) Run(ctx context.Context) {
	t := time.NewTicker(c.every)
	defer t.Stop()
	for {
		for b := range c.ids {
			c.Refresh(ctx, b)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Refresh is one refresh of a backend: it returns how many bindings were
// touched and how many connected keys stayed unresolved.
func (c *Connected) Refresh(ctx context.Context, backend string) (touched, unknown int) {
	start := time.Now()
	cctx, cancel := context.WithTimeout(ctx, max(2*c.every, 30*time.Second))
	defer cancel()
	var missing []tableKey
	touches := make([]store.Touch, 0, connectedBatch)
	err := c.src.ConnectedKeys(cctx, backend, connectedBatch, func(keys []tableKey) error {
		touches = touches[:0]
		c.mu.Lock()
		m := c.ids[backend]
		for _, k := range keys {
			if e, ok := m[k]; ok {
				e.seen = start.UnixNano()
				m[k] = e
				touches = append(touches, store.Touch{ClientID: e.id, TTL: e.ttl + c.every})
			} else if len(missing) < c.cap {
				missing = append(missing, k)
			}
		}
		c.mu.Unlock()
		n, err := c.touch.TouchConnected(cctx, backend, touches, 2*c.every+time.Second)
		touched += n
		return err
	})
	if err != nil {
		c.warn.Warn("cannot refresh the bindings of connected clients; their TTL runs meanwhile", "backend", backend, "err", err)
	}
	if len(missing) > 0 && time.Since(c.lastRebuild[backend]) >= rebuildEvery {
		c.lastRebuild[backend] = time.Now()
		n := c.resolve(ctx, backend, missing)
		touched += n
		unknown = len(missing) - n
	} else {
		unknown = len(missing)
	}
	c.prune(backend, start)
	c.log.Debug("connected refresh", "backend", backend, "touched", touched, "unknown", unknown, "took", time.Since(start))
	return touched, unknown
}

// resolve walks the store's bindings of a backend for the ids behind keys
// this agent has not answered, remembers them and touches them page by
// page, so a walk cut short keeps what it found. It has its own bound
// (resolveTimeout): a restarted agent beside many connected clients walks
// the whole map once.
func (c *Connected) resolve(ctx context.Context, backend string, keys []tableKey) (touched int) {
	ctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	want := make(map[tableKey]bool, len(keys))
	for _, k := range keys {
		want[k] = true
	}
	opts := store.ListOptions{Limit: store.MaxListLimit}
	for len(want) > 0 {
		page, err := c.st.List(ctx, backend, opts)
		if err != nil {
			c.warn.Warn("cannot walk the bindings to resolve connected clients", "backend", backend, "err", err)
			break
		}
		var touches []store.Touch
		for _, b := range page.Items {
			tk := tablekey.Of([]byte(b.ClientID))
			if want[tk] {
				delete(want, tk)
				c.mu.Lock()
				c.ids[backend][tk] = known{id: b.ClientID, ttl: c.ttl, seen: time.Now().UnixNano()}
				c.mu.Unlock()
				touches = append(touches, store.Touch{ClientID: b.ClientID, TTL: c.ttl + c.every})
			}
		}
		if len(touches) > 0 {
			n, err := c.touch.TouchConnected(ctx, backend, touches, 2*c.every+time.Second)
			touched += n
			if err != nil {
				c.warn.Warn("cannot refresh the bindings of connected clients", "backend", backend, "err", err)
			}
		}
		if page.NextCursor == "" {
			break
		}
		opts.Cursor = page.NextCursor
	}
	return touched
}

// prune forgets ids neither answered nor seen connected for the larger of
// ttl and two periods: their bindings have expired (or will by then).
func (c *Connected) prune(backend string, now time.Time) {
	keep := max(c.ttl, 2*c.every)
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, e := range c.ids[backend] {
		if now.UnixNano()-e.seen > int64(keep) {
			delete(c.ids[backend], k)
		}
	}
}

// SetConnected makes the agent record, for c, the client id behind each
// answer. Call it before the agent serves.
func (a *Agent) SetConnected(c *Connected) { a.connected = c }

// noteAnswer records the id of an answered client for the refresh.
func (a *Agent) noteAnswer(q *Query, d Decision) {
	if a.connected == nil || d.Server == "" {
		return
	}
	b := a.backends[q.Backend]
	if b == nil {
		return
	}
	key := q.ClientID
	if b.keyUsername {
		key = q.Username
	}
	a.connected.Remember(b.Name, key, a.bindingTTL(q.SessionExpiry))
}
