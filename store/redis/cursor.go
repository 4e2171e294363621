package redis

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math"
	"math/bits"
	"slices"
	"strings"
	"sync"

	goredis "github.com/redis/go-redis/v9"

	"github.com/stickyd/stickyd/store"
)

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
