// Package memory is an in-process store.Store for a single agent.
//
// Each backend is a B-tree ordered by client id, guarded by a RWMutex. The
// hot path, GetOrClaim on a live binding, takes only the read lock and
// allocates nothing: an entry's expiry is an atomic int64, so refreshing a
// TTL needs no write lock.
//
// Expired entries are removed lazily (by the writes that meet them) and by a
// sweeper that walks each backend in bounded chunks, so it never holds a lock
// for long. Per-server counts are kept incrementally; CountByServer sweeps
// first only when something may have expired since the last sweep.
package memory

import (
	"context"
	"encoding/base64"
	"fmt"
	"hash/crc32"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/google/btree"

	"github.com/stickyd/stickyd/store"
)

// Options configures a Store. The zero value is ready to use.
type Options struct {
	// Now is the clock; tests inject a fake one. Default time.Now.
	Now func() time.Time
	// SweepInterval is how often the background sweeper looks for expired
	// bindings. Default 1s.
	SweepInterval time.Duration
}

// Tuning knobs. Variables only so tests can shrink them.
var (
	// sweepChunk bounds the entries one lock hold of the sweeper visits.
	sweepChunk = 1024
)

const (
	treeDegree = 32
	// cursorVersion starts every memory List cursor, so a cursor from another
	// store (or a future format) is rejected instead of misread.
	cursorVersion = 0x81
	never         = int64(math.MaxInt64)
)

// Store is the in-memory store. Create it with New.
type Store struct {
	now      func() time.Time
	interval time.Duration

	// backends is copy-on-write: lookups on the hot path are one atomic
	// load; adding a backend (rare) copies the map under addMu.
	backends atomic.Pointer[map[string]*backend]
	addMu    sync.Mutex

	startOnce sync.Once
	closeOnce sync.Once
	stop      chan struct{}
	done      chan struct{}
	started   atomic.Bool
}

var _ store.Store = (*Store)(nil)

// item is what the tree holds: the key by value plus a pointer to the
// mutable entry. A probe item{id: x} lives on the stack, so lookups do not
// allocate.
type item struct {
	id string
	e  *entry
}

func lessItem(a, b item) bool { return a.id < b.id }

// entry is one binding. server and pinned change only under the backend's
// write lock; expires (unix ns, 0 = never) may be refreshed under the read
// lock.
type entry struct {
	server  string
	pinned  bool
	expires atomic.Int64
}

func (e *entry) live(now int64) bool {
	exp := e.expires.Load()
	return exp == 0 || now < exp
}

type backend struct {
	mu       sync.RWMutex
	tree     *btree.BTreeG[item]
	counts   map[string]int // entries per server, expired-but-present included
	draining map[string]bool

	// minExp is a lower bound on the expiry of every entry (never when none
	// expires). While now < minExp nothing has expired, so counts are exact.
	// It is lowered by every expiry write (always under mu, read or write)
	// and recomputed by sweep passes (published under the write lock).
	minExp atomic.Int64
	// passMin collects expiries written while a sweep pass runs.
	passMin atomic.Int64
	// sweepMu serialises sweep passes (sweeper and CountByServer).
	sweepMu sync.Mutex
}

func newBackend() *backend {
	b := &backend{
		tree:     btree.NewG[item](treeDegree, lessItem),
		counts:   make(map[string]int),
		draining: make(map[string]bool),
	}
	b.minExp.Store(never)
	b.passMin.Store(never)
	return b
}

// New returns an empty store. The sweeper starts with Start, or on the first
// write; Close stops it.
func New(opts Options) *Store {
	s := &Store{
		now:      opts.Now,
		interval: opts.SweepInterval,
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.interval <= 0 {
		s.interval = time.Second
	}
	m := make(map[string]*backend)
	s.backends.Store(&m)
	return s
}

// Start runs the background sweeper until ctx ends or Close is called. It
// is optional (the first write starts it) and safe to call more than once.
func (s *Store) Start(ctx context.Context) {
	s.startOnce.Do(func() {
		s.started.Store(true)
		go s.sweeper(ctx)
	})
}

func (s *Store) ensureStarted() {
	if !s.started.Load() {
		s.Start(context.Background())
	}
}

// Close stops the sweeper. The store stays usable (without sweeping).
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		close(s.stop)
		if s.started.Load() {
			<-s.done
		}
	})
	return nil
}

// Ping always succeeds: the map is in process.
func (s *Store) Ping(ctx context.Context) error { return nil }

func (s *Store) nowNs() int64 { return s.now().UnixNano() }

// expiry turns a TTL into an absolute deadline (0 = never), saturating.
func expiry(now int64, ttl time.Duration) int64 {
	if ttl <= 0 {
		return 0
	}
	if int64(ttl) > never-now {
		return never
	}
	return now + int64(ttl)
}

func (s *Store) backend(name string) *backend {
	return (*s.backends.Load())[name]
}

func (s *Store) backendOrCreate(name string) *backend {
	if b := s.backend(name); b != nil {
		return b
	}
	s.addMu.Lock()
	defer s.addMu.Unlock()
	old := *s.backends.Load()
	if b := old[name]; b != nil {
		return b
	}
	m := make(map[string]*backend, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	b := newBackend()
	m[name] = b
	s.backends.Store(&m)
	return b
}

// lower sets a to v if v is smaller.
func lower(a *atomic.Int64, v int64) {
	for {
		cur := a.Load()
		if v >= cur || a.CompareAndSwap(cur, v) {
			return
		}
	}
}

// noteExpiry keeps minExp a valid lower bound. Caller holds b.mu.
func (b *backend) noteExpiry(exp int64) {
	if exp == 0 {
		return
	}
	lower(&b.minExp, exp)
	lower(&b.passMin, exp)
}

// GetOrClaim implements store.Store.
func (s *Store) GetOrClaim(ctx context.Context, backendName, clientID, proposed string, ttl time.Duration) (store.Claim, error) {
	return s.getOrClaim(backendName, clientID, false, proposed, ttl), nil
}

// Inline is the store itself: every answer comes from memory.
func (s *Store) Inline() store.Inline { return s }

// Stats is empty: the memory store has no cache of its own.
func (s *Store) Stats() store.Stats { return store.Stats{} }

// TryGetOrClaim is GetOrClaim for callers that hold the id as bytes (the
// SPOE adapter): it never blocks on I/O, so it always answers, and it
// copies the id only when it stores a new binding.
func (s *Store) TryGetOrClaim(backendName string, clientID []byte, proposed string, ttl time.Duration) (store.Claim, bool) {
	return s.getOrClaim(backendName, borrow(clientID), true, proposed, ttl), true
}

// borrow views b as a string without copying, for lookups only: the
// string must not outlive the call (getOrClaim and move clone it before
// storing it).
func borrow(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// keep returns an id the tree may keep.
func keep(id string, borrowed bool) string {
	if borrowed {
		return strings.Clone(id)
	}
	return id
}

func (s *Store) getOrClaim(backendName, clientID string, borrowed bool, proposed string, ttl time.Duration) store.Claim {
	now := s.nowNs()
	if b := s.backend(backendName); b != nil {
		b.mu.RLock()
		if it, ok := b.tree.Get(item{id: clientID}); ok && it.e.live(now) {
			c := b.refresh(it.e, now, ttl)
			b.mu.RUnlock()
			return c
		}
		b.mu.RUnlock()
	}

	s.ensureStarted()
	b := s.backendOrCreate(backendName)
	b.mu.Lock()
	defer b.mu.Unlock()
	// Another writer may have claimed it between the two locks.
	if it, ok := b.tree.Get(item{id: clientID}); ok && it.e.live(now) {
		return b.refresh(it.e, now, ttl)
	}
	b.set(keep(clientID, borrowed), proposed, false, expiry(now, ttl))
	return store.Claim{Server: proposed, Claimed: true}
}

// refresh resets the TTL of a live, unpinned, expiring entry and returns
// it as a claim. Caller holds b.mu (read or write).
func (b *backend) refresh(e *entry, now int64, ttl time.Duration) store.Claim {
	if !e.pinned && ttl > 0 && e.expires.Load() != 0 {
		exp := expiry(now, ttl)
		e.expires.Store(exp)
		b.noteExpiry(exp)
	}
	return store.Claim{Server: e.server, Pinned: e.pinned}
}

// set creates or replaces a binding. Caller holds b.mu for writing.
func (b *backend) set(id, server string, pinned bool, exp int64) {
	e := &entry{server: server, pinned: pinned}
	e.expires.Store(exp)
	if old, ok := b.tree.ReplaceOrInsert(item{id: id, e: e}); ok {
		b.dec(old.e.server)
	}
	b.counts[server]++
	b.noteExpiry(exp)
}

// remove deletes a binding. Caller holds b.mu for writing.
func (b *backend) remove(id string) {
	if old, ok := b.tree.Delete(item{id: id}); ok {
		b.dec(old.e.server)
	}
}

func (b *backend) dec(server string) {
	if n := b.counts[server] - 1; n > 0 {
		b.counts[server] = n
	} else {
		delete(b.counts, server)
	}
}

// Move implements store.Store. Claimed is true when the compare-and-swap
// applied (even if from == to) or the binding was created.
func (s *Store) Move(ctx context.Context, backendName, clientID, from, to string, ttl time.Duration) (store.Claim, error) {
	return s.move(backendName, clientID, false, from, to, ttl), nil
}

// TryMove is Move with the id as bytes; it always answers.
func (s *Store) TryMove(backendName string, clientID []byte, from, to string, ttl time.Duration) (store.Claim, bool) {
	return s.move(backendName, borrow(clientID), true, from, to, ttl), true
}

func (s *Store) move(backendName, clientID string, borrowed bool, from, to string, ttl time.Duration) store.Claim {
	now := s.nowNs()
	s.ensureStarted()
	b := s.backendOrCreate(backendName)
	b.mu.Lock()
	defer b.mu.Unlock()
	if it, ok := b.tree.Get(item{id: clientID}); ok && it.e.live(now) {
		e := it.e
		if e.pinned || e.server != from {
			return store.Claim{Server: e.server, Pinned: e.pinned}
		}
	}
	b.set(keep(clientID, borrowed), to, false, expiry(now, ttl))
	return store.Claim{Server: to, Claimed: true}
}

// Get implements store.Store.
func (s *Store) Get(ctx context.Context, backendName, clientID string) (store.Binding, error) {
	now := s.nowNs()
	b := s.backend(backendName)
	if b == nil {
		return store.Binding{}, store.ErrNotFound
	}
	b.mu.RLock()
	it, ok := b.tree.Get(item{id: clientID})
	if !ok || !it.e.live(now) {
		b.mu.RUnlock()
		return store.Binding{}, store.ErrNotFound
	}
	bd := binding(backendName, it, now)
	b.mu.RUnlock()
	return bd, nil
}

func binding(backendName string, it item, now int64) store.Binding {
	bd := store.Binding{
		Backend:  backendName,
		ClientID: it.id,
		Server:   it.e.server,
		Pinned:   it.e.pinned,
	}
	if exp := it.e.expires.Load(); exp != 0 {
		bd.TTL = time.Duration(exp - now)
	}
	return bd
}

// Put implements store.Store.
func (s *Store) Put(ctx context.Context, bd store.Binding) error {
	now := s.nowNs()
	s.ensureStarted()
	b := s.backendOrCreate(bd.Backend)
	b.mu.Lock()
	b.set(bd.ClientID, bd.Server, bd.Pinned, expiry(now, bd.TTL))
	b.mu.Unlock()
	return nil
}

// Delete implements store.Store.
func (s *Store) Delete(ctx context.Context, backendName, clientID string) error {
	now := s.nowNs()
	b := s.backend(backendName)
	if b == nil {
		return store.ErrNotFound
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	it, ok := b.tree.Get(item{id: clientID})
	if !ok {
		return store.ErrNotFound
	}
	b.remove(clientID)
	if !it.e.live(now) {
		return store.ErrNotFound
	}
	return nil
}

// List implements store.Store. Items come in client-id order. The cursor is
// the last client id examined; with a server filter a call visits at most
// 10*limit+1000 entries and may return a short page.
func (s *Store) List(ctx context.Context, backendName string, opts store.ListOptions) (store.Page, error) {
	start, hasStart, err := decodeCursor(opts.Cursor)
	if err != nil {
		return store.Page{}, err
	}
	limit := opts.Limit
	if limit <= 0 {
		limit = store.DefaultListLimit
	}
	limit = min(limit, store.MaxListLimit)
	b := s.backend(backendName)
	if b == nil {
		return store.Page{}, nil
	}

	// Begin at the prefix, or after the cursor when that is further on.
	pivot, skipPivot := opts.Prefix, false
	if hasStart && start >= pivot {
		pivot, skipPivot = start, true
	}
	budget := 10*limit + 1000
	now := s.nowNs()

	var page store.Page
	var last string
	visited := 0
	full := false // stopped early: more may follow
	visit := func(it item) bool {
		if skipPivot && it.id == pivot {
			return true
		}
		if !strings.HasPrefix(it.id, opts.Prefix) {
			return false // ordered: nothing further matches
		}
		if len(page.Items) == limit || visited == budget {
			full = true
			return false
		}
		visited++
		last = it.id
		if !it.e.live(now) || (opts.Server != "" && it.e.server != opts.Server) {
			return true
		}
		page.Items = append(page.Items, binding(backendName, it, now))
		return true
	}
	b.mu.RLock()
	if end, ok := prefixEnd(opts.Prefix); ok {
		b.tree.AscendRange(item{id: pivot}, item{id: end}, visit)
	} else {
		b.tree.AscendGreaterOrEqual(item{id: pivot}, visit)
	}
	b.mu.RUnlock()
	if full {
		page.NextCursor = encodeCursor(last)
	}
	return page, nil
}

// prefixEnd returns the smallest string greater than every string with
// prefix p, or false when there is none ("" or all 0xff).
func prefixEnd(p string) (string, bool) {
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] != 0xff {
			return p[:i] + string([]byte{p[i] + 1}), true
		}
	}
	return "", false
}

// A cursor is base64url(version, 2-byte checksum of the id, id): the
// checksum makes a string that merely decodes to the right version byte
// fail as a bad cursor instead of silently starting elsewhere.
func encodeCursor(id string) string {
	buf := make([]byte, 3+len(id))
	buf[0] = cursorVersion
	sum := cursorSum(id)
	buf[1], buf[2] = byte(sum>>8), byte(sum)
	copy(buf[3:], id)
	return base64.RawURLEncoding.EncodeToString(buf)
}

func cursorSum(id string) uint16 {
	h := crc32.ChecksumIEEE([]byte(id))
	return uint16(h ^ h>>16)
}

func decodeCursor(c string) (id string, ok bool, err error) {
	if c == "" {
		return "", false, nil
	}
	buf, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || len(buf) < 3 || buf[0] != cursorVersion ||
		uint16(buf[1])<<8|uint16(buf[2]) != cursorSum(string(buf[3:])) {
		return "", false, fmt.Errorf("memory list: %w", store.ErrBadCursor)
	}
	return string(buf[3:]), true, nil
}

// CountByServer implements store.Store. It is O(servers) while nothing has
// expired since the last sweep; otherwise it sweeps the backend first.
func (s *Store) CountByServer(ctx context.Context, backendName string) (map[string]int, error) {
	b := s.backend(backendName)
	out := make(map[string]int)
	if b == nil {
		return out, nil
	}
	if b.minExp.Load() <= s.nowNs() {
		if err := s.sweep(ctx, b); err != nil {
			return nil, fmt.Errorf("memory count: %w", err)
		}
	}
	b.mu.RLock()
	for k, v := range b.counts {
		out[k] = v
	}
	b.mu.RUnlock()
	return out, nil
}

// DeleteByServer implements store.Store. It works in chunks; a binding that
// moves to another server meanwhile survives.
func (s *Store) DeleteByServer(ctx context.Context, backendName, server string) (int, error) {
	b := s.backend(backendName)
	if b == nil {
		return 0, nil
	}
	deleted := 0
	err := b.chunks(ctx, s.nowNs, func(it item, now int64) bool {
		return it.e.server == server
	}, func(it item, now int64) {
		if it.e.live(now) {
			deleted++
		}
		b.remove(it.id)
	})
	if err != nil {
		return deleted, fmt.Errorf("memory delete-by-server: %w", err)
	}
	return deleted, nil
}

// chunks walks the whole tree, sweepChunk entries per read-lock hold,
// collecting items that match, then applies fn to each under the write lock
// after re-checking match (the entry may have changed in between).
func (b *backend) chunks(ctx context.Context, nowNs func() int64, match func(item, int64) bool, fn func(item, int64)) error {
	var from string
	first := true
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		now := nowNs()
		var hits []item
		n := 0
		more := false
		b.mu.RLock()
		b.tree.AscendGreaterOrEqual(item{id: from}, func(it item) bool {
			if !first && it.id == from {
				return true
			}
			if n == sweepChunk {
				more = true
				return false
			}
			n++
			from = it.id
			if match(it, now) {
				hits = append(hits, it)
			}
			return true
		})
		b.mu.RUnlock()
		first = false
		if len(hits) > 0 {
			b.mu.Lock()
			for _, h := range hits {
				// Same entry pointer still in place and still matching.
				if it, ok := b.tree.Get(item{id: h.id}); ok && it.e == h.e && match(it, now) {
					fn(it, now)
				}
			}
			b.mu.Unlock()
		}
		if !more {
			return nil
		}
	}
}

// sweep removes every expired entry of b and recomputes minExp.
func (s *Store) sweep(ctx context.Context, b *backend) error {
	b.sweepMu.Lock()
	defer b.sweepMu.Unlock()
	b.mu.Lock()
	b.passMin.Store(never)
	b.mu.Unlock()

	low := never
	expired := func(it item, now int64) bool {
		exp := it.e.expires.Load()
		if exp != 0 && now >= exp {
			return true
		}
		if exp != 0 && exp < low {
			low = exp
		}
		return false
	}
	err := b.chunks(ctx, s.nowNs, expired, func(it item, now int64) { b.remove(it.id) })
	if err != nil {
		return err // minExp stays the old, still valid, bound
	}
	// Under the write lock no expiry write can slip between the two loads.
	b.mu.Lock()
	b.minExp.Store(min(low, b.passMin.Load()))
	b.mu.Unlock()
	return nil
}

func (s *Store) sweeper(ctx context.Context) {
	defer close(s.done)
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.stop:
			return
		case <-t.C:
		}
		for _, b := range *s.backends.Load() {
			if b.minExp.Load() <= s.nowNs() {
				_ = s.sweep(ctx, b) // only fails when ctx ends
			}
		}
	}
}

// SetDraining implements store.Store.
func (s *Store) SetDraining(ctx context.Context, backendName, server string, draining bool) error {
	b := s.backendOrCreate(backendName)
	b.mu.Lock()
	if draining {
		b.draining[server] = true
	} else {
		delete(b.draining, server)
	}
	b.mu.Unlock()
	return nil
}

// Draining implements store.Store.
func (s *Store) Draining(ctx context.Context, backendName string) (map[string]bool, error) {
	out := make(map[string]bool)
	b := s.backend(backendName)
	if b == nil {
		return out, nil
	}
	b.mu.RLock()
	for k := range b.draining {
		out[k] = true
	}
	b.mu.RUnlock()
	return out, nil
}

// Len returns the number of entries held for a backend, expired ones not yet
// swept included. For tests and metrics.
func (s *Store) Len(backendName string) int {
	b := s.backend(backendName)
	if b == nil {
		return 0
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.tree.Len()
}
