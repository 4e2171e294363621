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
	// MaxBindings caps the entries of each backend (expired ones count until
	// swept): past it a new client gets Claim.NotStored and nothing is
	// stored. Existing bindings, Put and Move of a present entry are not
	// limited. Default DefaultMaxBindings; negative means no cap.
	MaxBindings int
}

// DefaultMaxBindings is the cap per backend when Options.MaxBindings is 0.
const DefaultMaxBindings = 1_000_000

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
	max      int // per backend; <= 0: no cap

	// backends is copy-on-write: lookups on the hot path are one atomic
	// load; adding a backend (rare) copies the map under addMu.
	backends atomic.Pointer[map[string]*backend]
	addMu    sync.Mutex

	startOnce sync.Once
	closeOnce sync.Once
	stop      chan struct{}
	done      chan struct{}
	started   atomic.Bool

	audit auditLog // audit.go
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
	// conn (unix ns) is when the client stops counting as connected
	// (connected.go); 0: not reported connected.
	conn atomic.Int64
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
		max:      opts.MaxBindings,
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.interval <= 0 {
		s.interval = time.Second
	}
	if s.max == 0 {
		s.max = DefaultMaxBindings
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
	it, ok := b.tree.Get(item{id: clientID})
	if ok && it.e.live(now) {
		return b.refresh(it.e, now, ttl)
	}
	if !ok && s.full(b) {
		return store.Claim{Server: proposed, NotStored: true}
	}
	b.set(keep(clientID, borrowed), proposed, false, expiry(now, ttl))
	return store.Claim{Server: proposed, Claimed: true}
}

// full reports whether b holds its cap of entries. Caller holds b.mu.
func (s *Store) full(b *backend) bool { return s.max > 0 && b.tree.Len() >= s.max }

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
	it, ok := b.tree.Get(item{id: clientID})
	if ok && it.e.live(now) {
		e := it.e
		if e.pinned || e.server != from {
			return store.Claim{Server: e.server, Pinned: e.pinned}
		}
	}
	if !ok && s.full(b) {
		return store.Claim{Server: to, NotStored: true}
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
		Backend:   backendName,
		ClientID:  it.id,
		Server:    it.e.server,
		Pinned:    it.e.pinned,
		Connected: it.e.conn.Load() > now,
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
