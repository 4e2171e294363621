package redis

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/stickyd/stickyd/store"
)

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
	return s.readBucketsConn(ctx, keys, now, func(id, server string, pinned bool, exp int64, _ bool) { fn(id, server, pinned, exp) })
}

// readBucketsConn is readBuckets that also says whether each binding is
// marked connected.
func (s *Store) readBucketsConn(ctx context.Context, keys []string, now int64, fn func(id, server string, pinned bool, exp int64, connected bool)) error {
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
			exp, server, pinned, conn := decodeConn(v)
			if exp != 0 && exp <= now {
				continue // expired, not swept yet
			}
			fn(id, server, pinned, exp, conn*1000 > now)
		}
	}
	return nil
}

// fetch reads the bindings in bucket keys, skipping ids in seen (which it
// extends) and those opts filters out.
func (s *Store) fetch(ctx context.Context, backend string, keys []string, opts store.ListOptions, now int64, seen map[string]struct{}) ([]store.Binding, error) {
	var out []store.Binding
	err := s.readBucketsConn(ctx, keys, now, func(id, server string, pinned bool, exp int64, conn bool) {
		if _, dup := seen[id]; dup || !strings.HasPrefix(id, opts.Prefix) || (opts.Server != "" && server != opts.Server) {
			return
		}
		seen[id] = struct{}{}
		b := store.Binding{Backend: backend, ClientID: id, Server: server, Pinned: pinned, Connected: conn}
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
	if s.cache != nil {
		s.cache.forgetServer(backend, server)
	}
	if err != nil {
		return deleted, fmt.Errorf("redis delete-by-server: %w", err)
	}
	return deleted, nil
}
