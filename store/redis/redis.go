package redis

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/stickyd/stickyd/store"
)

// Defaults for Options.
const (
	DefaultPrefix    = "stickyd:"
	DefaultOpTimeout = 50 * time.Millisecond
)

// Errors for names the key layout cannot hold.
var (
	ErrBackendName = errors.New("backend name contains ':'")
	ErrServerName  = errors.New("server name starts with '!'")
)

// Options configures a Store.
type Options struct {
	// URL addresses a standalone Redis, a Sentinel-managed master or a Redis
	// Cluster; see the package doc for the forms (redis://, rediss://,
	// unix://, redis-sentinel://, rediss-sentinel://, redis-cluster://,
	// rediss-cluster://). Query parameters that go-redis accepts
	// (dial_timeout, pool_size, max_retries, ...) override this package's
	// defaults. Ignored when Client is set.
	URL string
	// Prefix starts every key. Default DefaultPrefix.
	Prefix string
	// OpTimeout is the budget of one hot-path call (GetOrClaim, Move) and of
	// every socket read or write. Default DefaultOpTimeout.
	OpTimeout time.Duration
	// CacheSize, when positive, keeps up to that many recent bindings in
	// process, kept coherent with Redis over pub/sub (see cache.go): a
	// reconnect is then answered without a round trip. 0 disables it.
	// Ids longer than CacheMaxIDLen are not cached, which bounds its memory.
	CacheSize int
	// MaxBindings caps the bindings of each backend: past it a new client
	// gets Claim.NotStored and nothing is written. The count is every
	// bucket's length (expired fields included until swept), taken every
	// CountInterval, plus the bindings this Store made since: agents sharing
	// the Redis can overshoot by what the others made within one interval.
	// Default DefaultMaxBindings; negative means no cap.
	MaxBindings int
	// CountInterval is how often bindings are counted for MaxBindings.
	// Default DefaultCountInterval.
	CountInterval time.Duration
	// Logger receives the store's rare warnings. Default: discarded.
	Logger *slog.Logger
	// Client, when set, is used instead of dialing URL (tests, custom
	// set-ups). It must be a *goredis.Client (standalone, or a sentinel
	// failover client) or a *goredis.ClusterClient on a Redis Cluster; the
	// Store does not close it.
	Client goredis.UniversalClient
}

// Store is the Redis store. Create it with New.
type Store struct {
	rdb       goredis.UniversalClient
	cluster   *goredis.ClusterClient // rdb, on Redis Cluster; nil otherwise
	owned     bool                   // rdb was built by New, so Close closes it
	prefix    string
	opTimeout time.Duration
	channel   string // invalidations are published here

	cache     *cache // nil when disabled
	stopCache context.CancelFunc
	cacheDone sync.WaitGroup

	log  *slog.Logger
	hk   atomic.Pointer[sipKey] // the shared hash key, once read
	hkMu sync.Mutex
	limits
}

var _ store.Store = (*Store)(nil)

// SetOnChange makes fn hear every binding change any store sharing this
// Redis makes (put, delete, move), as the invalidation channel delivers
// it, so a caller can drop what it remembers of that binding (HAProxy's
// table of answers). It needs the local cache (CacheSize > 0), which holds
// the subscription, and reports whether it was set. fn runs on the
// subscription's goroutine: it must not block.
func (s *Store) SetOnChange(fn func(backend, clientID string)) bool {
	if s.cache == nil {
		return false
	}
	s.cache.onChange.Store(&fn)
	return true
}

// New returns a Store. It does not wait for Redis: a Store made while Redis
// is down works once Redis answers. Errors come only from bad options. ctx
// is not used: cluster topology is discovered lazily by the client.
func New(ctx context.Context, opts Options) (*Store, error) {
	s := &Store{prefix: opts.Prefix, opTimeout: opts.OpTimeout, rdb: opts.Client, log: opts.Logger}
	s.maxBindings, s.countReq = opts.MaxBindings, make(chan struct{}, 1)
	if s.maxBindings == 0 {
		s.maxBindings = DefaultMaxBindings
	}
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if s.prefix == "" {
		s.prefix = DefaultPrefix
	}
	if s.opTimeout <= 0 {
		s.opTimeout = DefaultOpTimeout
	}
	if s.rdb == nil {
		uo, err := clientOptions(opts.URL, s.opTimeout)
		if err != nil {
			return nil, err
		}
		s.rdb = goredis.NewUniversalClient(uo)
		s.owned = true
	}
	// SCAN must see the whole keyspace: a standalone or sentinel client
	// (*goredis.Client) does; on a cluster client the Store scans every
	// master itself. A ring shards by a hash of its own and a cluster client
	// with a custom ClusterSlots (NewFailoverClusterClient) has no CLUSTER
	// SLOTS to list masters with.
	switch c := s.rdb.(type) {
	case *goredis.Client:
	case *goredis.ClusterClient:
		if c.Options().ClusterSlots != nil {
			return nil, s.reject("a cluster client with a custom ClusterSlots is not supported")
		}
		s.cluster = c
	default:
		return nil, s.reject(fmt.Sprintf("%T is not supported (want *redis.Client or *redis.ClusterClient)", s.rdb))
	}
	s.channel = s.prefix + invChannel
	bctx, cancel := context.WithCancel(context.Background())
	s.stopCache = cancel
	if opts.CacheSize > 0 {
		s.cache = newCache(opts.CacheSize, s.prefix)
		s.cacheDone.Add(2)
		go func() { defer s.cacheDone.Done(); s.cache.subscribe(bctx, s.rdb) }()
		go func() { defer s.cacheDone.Done(); s.cache.refresher(bctx, s) }()
	}
	if s.maxBindings > 0 {
		every := opts.CountInterval
		if every <= 0 {
			every = DefaultCountInterval
		}
		s.cacheDone.Add(1)
		go func() { defer s.cacheDone.Done(); s.counting(bctx, every) }()
	}
	return s, nil
}

// CacheStats reports the local cache's counters (zero when it is off).
func (s *Store) CacheStats() CacheStats {
	if s.cache == nil {
		return CacheStats{}
	}
	return s.cache.stats()
}

// Stats reports the local cache, when it is on, and the read-only state.
func (s *Store) Stats() store.Stats {
	st := store.Stats{ReadOnly: s.readOnly.Load()}
	if s.cache != nil {
		cs := s.cache.stats()
		st.Cache = &cs
	}
	return st
}

// Inline is the local cache's path, nil when the cache is off.
func (s *Store) Inline() store.Inline {
	if s.cache == nil {
		return nil
	}
	return s
}

// TryGetOrClaim answers GetOrClaim from the local cache, without I/O, when
// it holds the binding (store.Inline); false otherwise.
func (s *Store) TryGetOrClaim(backend string, clientID []byte, proposed string, ttl time.Duration) (store.Claim, bool) {
	if s.cache == nil {
		return store.Claim{}, false
	}
	return s.cache.lookup(backend, clientID, ttl)
}

// TryMove never answers: a move is a compare-and-swap in Redis.
func (s *Store) TryMove(string, []byte, string, string, time.Duration) (store.Claim, bool) {
	return store.Claim{}, false
}

// reject closes a client New built and returns the error for it.
func (s *Store) reject(msg string) error {
	if s.owned {
		_ = s.rdb.Close()
	}
	return errors.New("redis: " + msg)
}

// Client returns the underlying client (for pool metrics).
func (s *Store) Client() goredis.UniversalClient { return s.rdb }

// Close stops the cache and closes the client if New created it.
func (s *Store) Close() error {
	if s.stopCache != nil {
		s.stopCache()
		if s.cache != nil {
			s.cache.stop()
		}
		s.cacheDone.Wait()
		s.stopCache = nil
	}
	if !s.owned {
		return nil
	}
	if err := s.rdb.Close(); err != nil {
		return fmt.Errorf("redis close: %w", err)
	}
	return nil
}

// Ping implements store.Store. On Redis Cluster it pings every master, so
// that a shard that does not answer makes the store unhealthy. It also
// restores the shared hash key if it went and, while Redis refuses writes,
// probes whether it takes them again (Stats.ReadOnly): a read-only store
// still answers, so Ping does not fail for it.
func (s *Store) Ping(ctx context.Context) error {
	var err error
	if s.cluster != nil {
		err = s.cluster.ForEachMaster(ctx, func(ctx context.Context, c *goredis.Client) error {
			if err := c.Ping(ctx).Err(); err != nil {
				return fmt.Errorf("%s: %w", c.Options().Addr, err)
			}
			return nil
		})
	} else {
		err = s.rdb.Ping(ctx).Err()
	}
	if err != nil {
		return fmt.Errorf("redis ping: %w", err)
	}
	if err := s.checkHashKey(ctx); err != nil {
		return fmt.Errorf("redis ping: %w", err)
	}
	s.probeWritable(ctx)
	return nil
}
