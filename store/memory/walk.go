package memory

import (
	"context"
	"encoding/base64"
	"fmt"
	"hash/crc32"
	"strings"
	"time"

	"github.com/stickyd/stickyd/store"
)

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
