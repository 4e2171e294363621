package redis

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"math/bits"
	"slices"
	"strings"
	"sync"
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
	CacheSize int
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
}

var _ store.Store = (*Store)(nil)

// New returns a Store. It does not wait for Redis: a Store made while Redis
// is down works once Redis answers. Errors come only from bad options. ctx
// is not used: cluster topology is discovered lazily by the client.
func New(ctx context.Context, opts Options) (*Store, error) {
	s := &Store{prefix: opts.Prefix, opTimeout: opts.OpTimeout, rdb: opts.Client}
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
	if opts.CacheSize > 0 {
		s.cache = newCache(opts.CacheSize, s.prefix)
		cctx, cancel := context.WithCancel(context.Background())
		s.stopCache = cancel
		s.cacheDone.Add(2)
		go func() { defer s.cacheDone.Done(); s.cache.subscribe(cctx, s.rdb) }()
		go func() { defer s.cacheDone.Done(); s.cache.refresher(cctx, s) }()
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

// Stats reports the local cache, when it is on.
func (s *Store) Stats() store.Stats {
	if s.cache == nil {
		return store.Stats{}
	}
	cs := s.cache.stats()
	return store.Stats{Cache: &cs}
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
		s.cache.stop()
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
// that a shard that does not answer makes the store unhealthy.
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
	return nil
}

// bucketBits sizes the hash buckets of a backend: 65536 of them. It is
// part of the key layout: every agent sharing a Redis must agree on it.
const bucketBits = 16

// bucketOf spreads client ids over the buckets (FNV-1a 32: stable across
// processes and versions).
func bucketOf(clientID string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(clientID); i++ {
		h ^= uint32(clientID[i])
		h *= 16777619
	}
	return h & (1<<bucketBits - 1)
}

// bucketPrefix starts every bucket key of a backend.
func (s *Store) bucketPrefix(backend string) string { return s.prefix + "h:" + backend + ":" }

// bucketKey is the hash that holds the client's binding.
func (s *Store) bucketKey(backend, clientID string) string {
	const hexDigits = "0123456789abcdef"
	n := bucketOf(clientID)
	return s.prefix + "h:" + backend + ":" + string([]byte{hexDigits[n>>12&15], hexDigits[n>>8&15], hexDigits[n>>4&15], hexDigits[n&15]})
}

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

func parseClaim(reply string) (store.Claim, error) {
	if len(reply) == 0 || (reply[0] != '0' && reply[0] != '1') {
		return store.Claim{}, fmt.Errorf("unexpected script reply %.20q", reply)
	}
	server, pinned := decodeServer(reply[1:])
	return store.Claim{Server: server, Pinned: pinned, Claimed: reply[0] == '1'}, nil
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
	reply, err := claimScript.Run(ctx, s.rdb, []string{s.bucketKey(backend, clientID)}, clientID, proposed, millis(ttl)).Text()
	if err != nil {
		return store.Claim{}, fmt.Errorf("redis get-or-claim: %w", err)
	}
	c, err := parseClaim(reply)
	if err != nil {
		return store.Claim{}, fmt.Errorf("redis get-or-claim: %w", err)
	}
	if s.cache != nil {
		s.cache.fill(t, clientID, c, ttl)
	}
	return c, nil
}

// Move implements store.Store in one round trip. Claimed is true when the
// compare-and-swap applied (even if from == to) or the binding was created.
func (s *Store) Move(ctx context.Context, backend, clientID, from, to string, ttl time.Duration) (store.Claim, error) {
	if err := errors.Join(checkBackend(backend), checkServer(from), checkServer(to)); err != nil {
		return store.Claim{}, fmt.Errorf("redis move: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	reply, err := moveScript.Run(ctx, s.rdb, []string{s.bucketKey(backend, clientID)},
		clientID, from, to, millis(ttl), s.channel, invMessage(backend, clientID)).Text()
	if err != nil {
		return store.Claim{}, fmt.Errorf("redis move: %w", err)
	}
	c, err := parseClaim(reply)
	if err != nil {
		return store.Claim{}, fmt.Errorf("redis move: %w", err)
	}
	return c, nil
}

// Get implements store.Store.
func (s *Store) Get(ctx context.Context, backend, clientID string) (store.Binding, error) {
	if err := checkBackend(backend); err != nil {
		return store.Binding{}, fmt.Errorf("redis get: %w", err)
	}
	res, err := getScript.Run(ctx, s.rdb, []string{s.bucketKey(backend, clientID)}, clientID).Slice()
	if errors.Is(err, goredis.Nil) {
		return store.Binding{}, store.ErrNotFound
	}
	if err != nil {
		return store.Binding{}, fmt.Errorf("redis get: %w", err)
	}
	var v string
	var pttl int64
	ok := len(res) == 2
	if ok {
		v, ok = res[0].(string)
	}
	if ok {
		pttl, ok = res[1].(int64)
	}
	if !ok {
		return store.Binding{}, fmt.Errorf("redis get: unexpected script reply %.80v", res)
	}
	b := store.Binding{Backend: backend, ClientID: clientID}
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
	err := putScript.Run(ctx, s.rdb, []string{s.bucketKey(b.Backend, b.ClientID)},
		b.ClientID, encodeServer(b.Server, b.Pinned), millis(b.TTL), s.channel, invMessage(b.Backend, b.ClientID)).Err()
	if err != nil {
		return fmt.Errorf("redis put: %w", err)
	}
	return nil
}

// Delete implements store.Store.
func (s *Store) Delete(ctx context.Context, backend, clientID string) error {
	if err := checkBackend(backend); err != nil {
		return fmt.Errorf("redis delete: %w", err)
	}
	n, err := delScript.Run(ctx, s.rdb, []string{s.bucketKey(backend, clientID)}, clientID, s.channel, invMessage(backend, clientID)).Int()
	if err != nil {
		return fmt.Errorf("redis delete: %w", err)
	}
	if n == 0 {
		return store.ErrNotFound
	}
	return nil
}

// globEscape quotes the SCAN MATCH metacharacters so s matches literally.
func globEscape(s string) string {
	if !strings.ContainsAny(s, `*?[]\`) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

const (
	cursorVersion = 1
	flagPartial   = 1 // the cursor resumes inside a SCAN step
	flagTagged    = 2 // the cursor names its Redis Cluster master by tag
	// maxScanCalls bounds the SCAN calls (each followed by one pipeline)
	// one List page makes.
	maxScanCalls = 8
	// scanBatch is the SCAN COUNT of whole-backend walks.
	scanBatch = 1000
)

// master is one server whose keyspace SCAN walks: the only one for a
// standalone or sentinel client, each master serving slots on Redis Cluster.
type master struct {
	client goredis.Cmdable
	// tag names a cluster master in cursors (FNV-1a of its node ID), so
	// that a cursor finds it again after the master list changed.
	tag   uint32
	start int // the lowest slot it serves (cluster)
}

// masters lists the servers to SCAN, in a stable order. On Redis Cluster
// that is every master serving slots, ordered by the lowest slot each
// serves: a replica promoted by a failover takes its old master's place,
// and adding an empty master changes nothing. The list is built per call
// (one CLUSTER SLOTS, go-redis's own topology reload and one CLUSTER MYID
// per master), so admin calls follow topology changes.
func (s *Store) masters(ctx context.Context) ([]master, error) {
	if s.cluster == nil {
		return []master{{client: s.rdb}}, nil
	}
	// CLUSTER SLOTS is deprecated since Redis 7.0 in favour of CLUSTER
	// SHARDS, which Redis 6 lacks; SLOTS answers on every version we support.
	slots, err := s.cluster.ClusterSlots(ctx).Result() //lint:ignore SA1019 see above

	if err != nil {
		return nil, fmt.Errorf("cluster slots: %w", err)
	}
	first := make(map[string]int) // master node ID -> lowest slot
	for _, sl := range slots {
		if len(sl.Nodes) == 0 || sl.Nodes[0].ID == "" {
			continue
		}
		if v, ok := first[sl.Nodes[0].ID]; !ok || sl.Start < v {
			first[sl.Nodes[0].ID] = sl.Start
		}
	}
	var mu sync.Mutex
	var out []master
	// The client's masters are joined with CLUSTER SLOTS by node ID, not
	// address: go-redis may rewrite the addresses nodes announce.
	err = s.cluster.ForEachMaster(ctx, func(ctx context.Context, c *goredis.Client) error {
		id, err := c.ClusterMyID(ctx).Result()
		if err != nil {
			return fmt.Errorf("cluster myid of %s: %w", c.Options().Addr, err)
		}
		start, ok := first[id]
		if !ok {
			return nil // serves no slot, so holds no key
		}
		h := fnv.New32a()
		h.Write([]byte(id))
		mu.Lock()
		out = append(out, master{client: c, tag: h.Sum32(), start: start})
		mu.Unlock()
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("cluster masters: %w", err)
	}
	if len(out) == 0 || len(out) != len(first) {
		return nil, fmt.Errorf("cluster topology is changing (%d masters serve slots, the client knows %d of them); retry", len(first), len(out))
	}
	slices.SortFunc(out, func(a, b master) int { return a.start - b.start })
	return out, nil
}

// cursor is where a List page resumes: the master (node) and its SCAN
// cursor. A page that ends inside a SCAN step (the step held more than the
// page had room for) records the step (its start scan, COUNT and end) and
// the last client id returned: the next page replays the step in client-id
// order and skips ids <= after.
type cursor struct {
	node   int
	tagged bool // on Redis Cluster: tag names the master being scanned
	tag    uint32
	scan   uint64

	partial bool
	count   int
	end     uint64
	after   string
}

// encodeCursor: version byte, flags byte, for a tagged cursor the 4-byte
// big-endian tag, uvarint node index, uvarint SCAN cursor and, for a
// partial step, uvarint COUNT, uvarint end and the id.
func encodeCursor(c cursor) string {
	buf := make([]byte, 0, 6+4*binary.MaxVarintLen64+len(c.after))
	var flags byte
	if c.partial {
		flags |= flagPartial
	}
	if c.tagged {
		flags |= flagTagged
	}
	buf = append(buf, cursorVersion, flags)
	if c.tagged {
		buf = binary.BigEndian.AppendUint32(buf, c.tag)
	}
	buf = binary.AppendUvarint(buf, uint64(c.node))
	buf = binary.AppendUvarint(buf, c.scan)
	if c.partial {
		buf = binary.AppendUvarint(buf, uint64(c.count))
		buf = binary.AppendUvarint(buf, c.end)
		buf = append(buf, c.after...)
	}
	return base64.RawURLEncoding.EncodeToString(buf)
}

// decodeCursor parses a cursor; locate then checks it against the masters.
func decodeCursor(s string, maxCount int) (cursor, error) {
	if s == "" {
		return cursor{}, nil
	}
	bad := fmt.Errorf("redis list: %w", store.ErrBadCursor)
	buf, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(buf) < 4 || buf[0] != cursorVersion || buf[1]&^(flagPartial|flagTagged) != 0 {
		return cursor{}, bad
	}
	c := cursor{partial: buf[1]&flagPartial != 0, tagged: buf[1]&flagTagged != 0}
	buf = buf[2:]
	if c.tagged {
		if len(buf) < 6 {
			return cursor{}, bad
		}
		c.tag, buf = binary.BigEndian.Uint32(buf), buf[4:]
	}
	uv := func() (uint64, bool) {
		v, n := binary.Uvarint(buf)
		if n <= 0 {
			return 0, false
		}
		buf = buf[n:]
		return v, true
	}
	node, ok1 := uv()
	scan, ok2 := uv()
	if !ok1 || !ok2 || node > math.MaxInt32 {
		return cursor{}, bad
	}
	c.node, c.scan = int(node), scan
	if !c.partial {
		if len(buf) != 0 {
			return cursor{}, bad
		}
		return c, nil
	}
	count, ok1 := uv()
	end, ok2 := uv()
	if !ok1 || !ok2 || count == 0 || count > uint64(maxCount) {
		return cursor{}, bad
	}
	c.count, c.end, c.after = int(count), end, string(buf)
	return c, nil
}

// locate points a decoded cursor at its master in nodes. A tagged cursor
// follows its master to wherever it now sits in the list, SCAN position
// and all. If that master is gone (failover, removal), the master now at
// the cursor's index is walked from its start: its keys may come twice,
// which callers tolerate. Only an index past the list is ErrBadCursor.
func locate(c cursor, nodes []master) (cursor, error) {
	if c.tagged {
		if j := slices.IndexFunc(nodes, func(n master) bool { return n.tag == c.tag }); j >= 0 {
			c.node = j
			return c, nil
		}
	}
	if c.node >= len(nodes) {
		return cursor{}, fmt.Errorf("redis list: %w", store.ErrBadCursor)
	}
	if c.tagged {
		return cursor{node: c.node}, nil
	}
	return c, nil
}

// encode stamps the cursor with the tag of its master on Redis Cluster.
func (s *Store) encode(c cursor, nodes []master) string {
	if s.cluster != nil {
		c.tagged, c.tag = true, nodes[c.node].tag
	}
	return encodeCursor(c)
}

// scanPos orders SCAN cursors along one walk: Redis increments the cursor's
// reversed bits, which keeps this order across hash-table resizes. The
// final cursor, 0, comes after every other.
func scanPos(c uint64) uint64 {
	if c == 0 {
		return math.MaxUint64
	}
	return bits.Reverse64(c)
}

// List implements store.Store; see the package doc for paging semantics.
func (s *Store) List(ctx context.Context, backend string, opts store.ListOptions) (store.Page, error) {
	if err := checkBackend(backend); err != nil {
		return store.Page{}, fmt.Errorf("redis list: %w", err)
	}
	limit := opts.Limit
	if limit <= 0 {
		limit = store.DefaultListLimit
	}
	limit = min(limit, store.MaxListLimit)
	cur, err := decodeCursor(opts.Cursor, 4*store.MaxListLimit)
	if err != nil {
		return store.Page{}, err
	}
	nodes, err := s.masters(ctx)
	if err != nil {
		return store.Page{}, fmt.Errorf("redis list: %w", err)
	}
	if cur, err = locate(cur, nodes); err != nil {
		return store.Page{}, err
	}
	pattern := globEscape(s.bucketPrefix(backend)) + "*"
	now, err := s.redisNow(ctx)
	if err != nil {
		return store.Page{}, fmt.Errorf("redis list: %w", err)
	}

	var page store.Page
	seen := make(map[string]struct{}) // no duplicates within a page
	var asked, found int              // COUNTs asked and items they yielded
	for call := range maxScanCalls {
		count := scanCount(limit-len(page.Items), limit, asked, found)
		replay := call == 0 && cur.partial
		if replay {
			count = cur.count
		}
		keys, next, err := nodes[cur.node].client.Scan(ctx, cur.scan, pattern, int64(count)).Result()
		if err != nil {
			return store.Page{}, fmt.Errorf("redis list: scan: %w", err)
		}
		batch, err := s.fetch(ctx, backend, keys, opts, now, seen)
		if err != nil {
			return store.Page{}, fmt.Errorf("redis list: %w", err)
		}
		// Skipping ids <= after is safe only if this replay covers no more
		// of the keyspace than the step did then; if it covers more (keys
		// were deleted or the table shrank), skip nothing: ids already
		// returned come again, which callers tolerate, but none is lost.
		if replay && scanPos(next) <= scanPos(cur.end) {
			batch = slices.DeleteFunc(batch, func(b store.Binding) bool { return b.ClientID <= cur.after })
		}
		asked += count
		found += len(batch)
		if room := limit - len(page.Items); len(batch) > room {
			// The step does not fit: return its first ids in order and
			// resume inside it. Cutting it anywhere else would lose the
			// keys it holds behind the SCAN cursor.
			slices.SortFunc(batch, func(a, b store.Binding) int { return strings.Compare(a.ClientID, b.ClientID) })
			page.Items = append(page.Items, batch[:room]...)
			cur.partial, cur.count, cur.end, cur.after = true, count, next, batch[room-1].ClientID
			page.NextCursor = s.encode(cur, nodes)
			return page, nil
		}
		page.Items = append(page.Items, batch...)
		cur.partial, cur.after = false, ""
		cur.scan = next
		if next == 0 {
			cur.node++
			if cur.node == len(nodes) {
				return page, nil
			}
		}
		if len(page.Items) == limit {
			break
		}
	}
	page.NextCursor = s.encode(cur, nodes)
	return page, nil
}

// scanCount sizes the next SCAN COUNT so that the step most likely fits in
// what the page still needs: COUNT counts keys examined, and only a share of
// them (found/asked so far) pass MATCH and the server filter.
func scanCount(need, limit, asked, found int) int {
	density := 1.0
	if asked > 0 {
		density = max(float64(found)/float64(asked), 1.0/64)
	}
	c := int(float64(need) * 0.9 / density)
	return min(max(c, 1), 4*limit)
}

// redisNow is Redis's clock, which the bindings' expiries follow, in unix
// milliseconds.
func (s *Store) redisNow(ctx context.Context) (int64, error) {
	t, err := s.rdb.Time(ctx).Result()
	if err != nil {
		return 0, fmt.Errorf("time: %w", err)
	}
	return t.UnixMilli(), nil
}

// readBuckets reads bucket keys in one pipeline and calls fn with every
// live binding: client id, server, pinned, expiry (unix ms, 0 = never). A
// bucket that vanished since SCAN is skipped. On Redis Cluster the client
// splits the pipeline by node and follows MOVED/ASK, so buckets migrating
// meanwhile are still read.
func (s *Store) readBuckets(ctx context.Context, keys []string, now int64, fn func(id, server string, pinned bool, exp int64)) error {
	if len(keys) == 0 {
		return nil
	}
	pipe := s.rdb.Pipeline()
	cmds := make([]*goredis.MapStringStringCmd, len(keys))
	for i, k := range keys {
		cmds[i] = pipe.HGetAll(ctx, k)
	}
	_, _ = pipe.Exec(ctx) // errors are read per command below
	for _, c := range cmds {
		fields, err := c.Result()
		if err != nil {
			return fmt.Errorf("hgetall: %w", err)
		}
		for id, v := range fields {
			exp, server, pinned := decodeValue(v)
			if exp != 0 && exp <= now {
				continue // expired, not swept yet
			}
			fn(id, server, pinned, exp)
		}
	}
	return nil
}

// fetch reads the bindings in bucket keys, skipping ids in seen (which it
// extends) and those opts filters out.
func (s *Store) fetch(ctx context.Context, backend string, keys []string, opts store.ListOptions, now int64, seen map[string]struct{}) ([]store.Binding, error) {
	var out []store.Binding
	err := s.readBuckets(ctx, keys, now, func(id, server string, pinned bool, exp int64) {
		if _, dup := seen[id]; dup || !strings.HasPrefix(id, opts.Prefix) || (opts.Server != "" && server != opts.Server) {
			return
		}
		seen[id] = struct{}{}
		b := store.Binding{Backend: backend, ClientID: id, Server: server, Pinned: pinned}
		if exp != 0 {
			b.TTL = time.Duration(exp-now) * time.Millisecond
		}
		out = append(out, b)
	})
	return out, err
}

// scanAll calls fn with each SCAN step of keys matching pattern on every
// master, one master after the other.
func (s *Store) scanAll(ctx context.Context, pattern string, fn func(keys []string) error) error {
	nodes, err := s.masters(ctx)
	if err != nil {
		return err
	}
	for _, node := range nodes {
		var cur uint64
		for {
			keys, next, err := node.client.Scan(ctx, cur, pattern, scanBatch).Result()
			if err != nil {
				return fmt.Errorf("scan: %w", err)
			}
			if len(keys) > 0 {
				if err := fn(keys); err != nil {
					return err
				}
			}
			if next == 0 {
				break
			}
			cur = next
		}
	}
	return nil
}

// CountByServer implements store.Store. It walks the whole backend.
func (s *Store) CountByServer(ctx context.Context, backend string) (map[string]int, error) {
	if err := checkBackend(backend); err != nil {
		return nil, fmt.Errorf("redis count: %w", err)
	}
	now, err := s.redisNow(ctx)
	if err != nil {
		return nil, fmt.Errorf("redis count: %w", err)
	}
	counts := make(map[string]int)
	err = s.scanAll(ctx, globEscape(s.bucketPrefix(backend))+"*", func(keys []string) error {
		return s.readBuckets(ctx, keys, now, func(_, server string, _ bool, _ int64) { counts[server]++ })
	})
	if err != nil {
		return nil, fmt.Errorf("redis count: %w", err)
	}
	return counts, nil
}

// DeleteByServer implements store.Store: one compare-and-delete script per
// bucket, so a binding that moved meanwhile survives.
func (s *Store) DeleteByServer(ctx context.Context, backend, server string) (int, error) {
	if err := errors.Join(checkBackend(backend), checkServer(server)); err != nil {
		return 0, fmt.Errorf("redis delete-by-server: %w", err)
	}
	pinned := encodeServer(server, true)
	deleted := 0
	err := s.scanAll(ctx, globEscape(s.bucketPrefix(backend))+"*", func(keys []string) error {
		cmds, err := s.runPipelined(ctx, deleteIfScript, len(keys), func(i int) ([]string, []any) {
			return []string{keys[i]}, []any{server, pinned, s.channel, backend + ":"}
		})
		if err != nil {
			return fmt.Errorf("delete: %w", err)
		}
		for _, c := range cmds {
			n, err := c.Int()
			if err != nil {
				return fmt.Errorf("delete: %w", err)
			}
			deleted += n
		}
		return nil
	})
	if err != nil {
		return deleted, fmt.Errorf("redis delete-by-server: %w", err)
	}
	return deleted, nil
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
		return fmt.Errorf("redis set-draining: %w", err)
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
