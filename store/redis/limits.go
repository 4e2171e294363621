package redis

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/stickyd/stickyd/store"
)

// Bounds on what clients can make Redis hold.
const (
	// DefaultMaxBindings is the cap per backend when Options.MaxBindings
	// is 0: about 600 MB of Redis at 58 bytes a binding.
	DefaultMaxBindings = 10_000_000
	// DefaultCountInterval is how often the bindings of each backend are
	// counted for MaxBindings.
	DefaultCountInterval = 10 * time.Second
	// maxBucketFields caps one bucket (a claim into a full bucket is not
	// stored), so that no script walks more than that many fields. With
	// keyed buckets a backend reaches it near 50 million bindings.
	maxBucketFields = 1024
)

// classify wraps the errors of a Redis that refuses writes (OOM at
// maxmemory with noeviction, READONLY on a replica) in store.ErrReadOnly
// and records the state; other errors pass as they are.
func (s *Store) classify(err error) error {
	if err == nil {
		return nil
	}
	if goredis.HasErrorPrefix(err, "OOM") || goredis.HasErrorPrefix(err, "READONLY") {
		s.readOnly.Store(true)
		return fmt.Errorf("%w: %w", store.ErrReadOnly, err)
	}
	return err
}

// wrote records a write Redis accepted.
func (s *Store) wrote() { s.readOnly.Store(false) }

// ReadOnly reports whether the last write Redis answered was refused.
func (s *Store) ReadOnly() bool { return s.readOnly.Load() }

// probeWritable, run by Ping while read-only, tries a write that changes
// nothing (SET XX of the hash key to its value) to learn whether Redis
// takes writes again.
func (s *Store) probeWritable(ctx context.Context) {
	k := s.hk.Load()
	if k == nil || !s.readOnly.Load() {
		return
	}
	if err := s.rdb.SetXX(ctx, s.prefix+hashKeyName, k.String(), goredis.KeepTTL).Err(); err == nil {
		s.wrote()
	} else {
		_ = s.classify(err)
	}
}

// bindingCount estimates the bindings of one backend for MaxBindings: the
// last count of Redis (every bucket's HLEN, expired fields included), plus
// the bindings this Store made since that count began, plus its claims in
// flight. A claim that lands while a count runs may be counted twice until
// the next count, never missed; other agents' bindings since the last
// count show at the next one.
type bindingCount struct {
	counted atomic.Int64
	made    atomic.Int64
	pending atomic.Int64 // reserved by claims not yet answered
}

func (s *Store) counter(backend string) *bindingCount {
	if c, ok := s.counts.Load(backend); ok {
		return c.(*bindingCount)
	}
	c, loaded := s.counts.LoadOrStore(backend, &bindingCount{})
	if !loaded {
		s.countNow() // a backend seen for the first time: count it soon
	}
	return c.(*bindingCount)
}

// reserve takes room for one new binding under MaxBindings, so that
// concurrent claims cannot all pass the check; done settles it once the
// claim answered.
func (s *Store) reserve(backend string) (c *bindingCount, ok bool) {
	if s.maxBindings <= 0 {
		return nil, true
	}
	c = s.counter(backend)
	if c.pending.Add(1)+c.counted.Load()+c.made.Load() > int64(s.maxBindings) {
		c.pending.Add(-1)
		return c, false
	}
	return c, true
}

// done settles a reservation: made is true when the claim stored a new
// binding.
func (c *bindingCount) done(made bool) {
	if made {
		c.made.Add(1)
	}
	c.pending.Add(-1)
}

// countNow asks the counting loop for a count without waiting for it.
func (s *Store) countNow() {
	select {
	case s.countReq <- struct{}{}:
	default:
	}
}

// counting keeps the counts of every backend seen fresh until ctx ends.
func (s *Store) counting(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.countReq:
		}
		s.counts.Range(func(k, v any) bool {
			c := v.(*bindingCount)
			made := c.made.Load()
			n, err := s.countFields(ctx, k.(string))
			if err != nil {
				return ctx.Err() == nil // keep the last count; retry next tick
			}
			// What was made during the count may be in it too: counted
			// twice until the next count, which errs on the safe side.
			c.counted.Store(n)
			c.made.Add(-made)
			return true
		})
	}
}

// countFields sums HLEN over a backend's buckets.
func (s *Store) countFields(ctx context.Context, backend string) (int64, error) {
	var total int64
	err := s.scanAll(ctx, globEscape(s.bucketPrefix(backend))+"*", func(keys []string) error {
		pipe := s.rdb.Pipeline()
		cmds := make([]*goredis.IntCmd, len(keys))
		for i, k := range keys {
			cmds[i] = pipe.HLen(ctx, k)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return fmt.Errorf("hlen: %w", err)
		}
		for _, c := range cmds {
			total += c.Val()
		}
		return nil
	})
	return total, err
}

// limits is the Store's share of this file's state.
type limits struct {
	maxBindings int
	counts      sync.Map // backend -> *bindingCount
	countReq    chan struct{}
	readOnly    atomic.Bool
}
