package agent

import (
	"sync/atomic"
	"time"
)

// breaker stops paying the store timeout on every connect once the store
// is known to be down. After threshold consecutive failures it opens for
// cooldown; then a single decision probes the store (half open): success
// closes it, failure opens it for another cooldown. The closed path costs
// one atomic load.
type breaker struct {
	threshold int32
	cooldown  time.Duration

	failures  atomic.Int32
	openUntil atomic.Int64 // unix nanoseconds; 0 while closed
	probing   atomic.Bool
}

// allow reports whether this decision may use the store.
func (b *breaker) allow() bool {
	until := b.openUntil.Load()
	if until == 0 {
		return true
	}
	if time.Now().UnixNano() < until {
		return false
	}
	return b.probing.CompareAndSwap(false, true)
}

// failure records a failed store call; true when it opened the breaker.
func (b *breaker) failure() bool {
	probe := b.probing.Load()
	if n := b.failures.Add(1); n < b.threshold && !probe {
		return false
	}
	wasClosed := b.openUntil.Load() == 0
	b.openUntil.Store(time.Now().Add(b.cooldown).UnixNano())
	b.probing.Store(false)
	return wasClosed
}

// success records a store call that worked; true when it closed the breaker.
func (b *breaker) success() bool {
	if b.failures.Load() != 0 {
		b.failures.Store(0)
	}
	if b.openUntil.Load() == 0 {
		return false
	}
	b.openUntil.Store(0)
	b.probing.Store(false)
	return true
}

type breakerState int

const (
	breakerClosed breakerState = iota
	breakerOpen
	breakerHalfOpen // open, and the cooldown is over: the next call probes
)

func (s breakerState) String() string {
	return [...]string{"closed", "open", "half_open"}[s]
}

// state reads the breaker without taking the probe.
func (b *breaker) state() breakerState {
	until := b.openUntil.Load()
	switch {
	case until == 0:
		return breakerClosed
	case time.Now().UnixNano() < until:
		return breakerOpen
	default:
		return breakerHalfOpen
	}
}
