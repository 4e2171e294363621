package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// mode says which client ids a round uses.
type mode int

const (
	// modeReconnect draws from a pool of ids every target has seen before:
	// every connect is a reconnect (the storm after a broker or network
	// blip).
	modeReconnect mode = iota
	// modeNew uses an id never seen before at every connect: every connect
	// is a first placement.
	modeNew
)

func (m mode) String() string { return [...]string{"reconnects", "new clients"}[m] }

// poolID is the n-th id of the reconnect pool: 24 bytes, a typical device id.
func poolID(buf []byte, n int) []byte {
	return strconv.AppendInt(append(buf[:0], "device-"...), 1e16+int64(n), 10)
}

// newIDs numbers never-seen ids across the whole run.
var newIDs atomic.Int64

func newID(buf []byte) []byte {
	return strconv.AppendInt(append(buf[:0], "new-dev-"...), 1e15+newIDs.Add(1), 10)
}

// level alternates MQTT 3.1.1 and 5 by id, so an id keeps its version.
func level(n int) byte {
	if n%2 == 1 {
		return mqtt5
	}
	return mqtt311
}

// roundResult is one measured round of one target.
type roundResult struct {
	kind       kind
	cycle      int
	conns      int
	failed     int
	elapsed    time.Duration
	p50, p99   time.Duration
	max        time.Duration
	reconnects uint64
	sticky     uint64
	// cpu per process over the round: haproxy, stickyd, redis, and this
	// program (load generator plus brokers).
	cpu      map[string]time.Duration
	agentRSS int64 // highest VmRSS of the agent sampled during the round
	firstErr error
}

func (r roundResult) rate() float64 { return float64(r.conns) / r.elapsed.Seconds() }

// warmUp connects every id of the pool once, so the measured rounds see
// only reconnects.
func (b *bench) warmUp(ctx context.Context, t *target) error {
	var next atomic.Int64
	var failed atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	for range b.opts.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := newClient(t.front)
			var buf []byte
			for ctx.Err() == nil {
				n := int(next.Add(1)) - 1
				if n >= b.opts.ids {
					return
				}
				buf = poolID(buf, n)
				if _, err := c.cycle(level(n), string(buf)); err != nil {
					failed.Add(1)
					once.Do(func() { firstErr = err })
				}
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	if firstErr != nil {
		return fmt.Errorf("%s warm-up: %d of %d connects failed, first: %w", t.kind, failed.Load(), b.opts.ids, firstErr)
	}
	return nil
}

// round drives the target for the round duration with the configured
// workers and measures it.
func (b *bench) round(ctx context.Context, t *target, m mode, cycle int) (roundResult, error) {
	res := roundResult{kind: t.kind, cycle: cycle}
	pids := b.pids(t)
	before, err := cpuTimes(pids)
	if err != nil {
		return res, err
	}
	t.led.begin()
	stopRSS := b.sampleRSS(t, &res.agentRSS)

	var failed atomic.Int64
	var errOnce sync.Once
	lats := make([][]time.Duration, b.opts.workers)
	start := time.Now()
	end := start.Add(b.opts.round)
	var wg sync.WaitGroup
	for w := range b.opts.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := newClient(t.front)
			var buf []byte
			own := make([]time.Duration, 0, 4096)
			// Each worker owns the pool's ids n ≡ w (mod workers), so no id
			// is connected twice at once (that would be a session takeover).
			owned := (b.opts.ids - w + b.opts.workers - 1) / b.opts.workers
			for i := 0; ctx.Err() == nil && time.Now().Before(end); i++ {
				n := w + i*b.opts.workers
				if m == modeNew {
					buf = newID(buf)
				} else {
					n = w + i%owned*b.opts.workers
					buf = poolID(buf, n)
				}
				lat, err := c.cycle(level(n), string(buf))
				if err != nil {
					failed.Add(1)
					errOnce.Do(func() { res.firstErr = err })
					continue
				}
				own = append(own, lat)
			}
			lats[w] = own
		}()
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	stopRSS()
	res.reconnects, res.sticky = t.led.end()
	if err := ctx.Err(); err != nil {
		return res, err
	}
	after, err := cpuTimes(pids)
	if err != nil {
		return res, err
	}
	res.cpu = map[string]time.Duration{}
	for name := range after {
		res.cpu[name] = after[name] - before[name]
	}
	all := slices.Concat(lats...)
	slices.Sort(all)
	res.conns, res.failed = len(all), int(failed.Load())
	res.p50, res.p99 = percentile(all, 0.50), percentile(all, 0.99)
	if len(all) > 0 {
		res.max = all[len(all)-1]
	}
	return res, nil
}

// percentile is the nearest-rank percentile of sorted values.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted))+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// pids names the processes whose CPU a round of t accounts.
func (b *bench) pids(t *target) map[string]int {
	m := map[string]int{"haproxy": t.haproxy.pid(), "bench": 0} // 0: this process
	if t.agent != nil {
		m["stickyd"] = t.agent.pid()
	}
	if t.kind.redis() {
		m["redis"] = b.redis.pid()
	}
	return m
}

func cpuTimes(pids map[string]int) (map[string]time.Duration, error) {
	out := make(map[string]time.Duration, len(pids))
	for name, pid := range pids {
		var err error
		if pid == 0 {
			out[name], err = selfCPU()
		} else {
			out[name], err = cpuTime(pid)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	return out, nil
}

// sampleRSS records the agent's highest VmRSS into *peak every 250ms until
// the returned stop is called (nothing without an agent).
func (b *bench) sampleRSS(t *target, peak *int64) (stop func()) {
	if t.agent == nil {
		return func() {}
	}
	return sampleRSS(t.agent.pid(), peak)
}

func sampleRSS(pid int, peak *int64) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			if v, err := rssBytes(pid); err == nil && v > *peak {
				*peak = v
			}
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}
