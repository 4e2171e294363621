package main

import (
	"context"
	"fmt"
	"time"
)

// The agent alone: what one decision costs stickyd (and Redis) without
// HAProxy, the load generator or the brokers sharing the CPU. The pool's
// ids, all bound by then, go over SPOE on aloneConns connections with one
// frame in flight on each, as HAProxy 2.6 sends them under the storm.

const (
	aloneConns     = 8
	aloneDecisions = 50_000
)

type aloneResult struct {
	kind      kind
	decisions int64
	rate      float64       // decisions/s
	agentCPU  time.Duration // per decision
	redisCPU  time.Duration // per decision, Redis targets only
}

func (b *bench) alone(ctx context.Context) ([]aloneResult, error) {
	var out []aloneResult
	for _, t := range b.targets {
		if t.agent == nil {
			continue
		}
		pids := map[string]int{"stickyd": t.agent.pid()}
		if t.kind.redis() {
			pids["redis"] = b.redis.pid()
		}
		before, err := cpuTimes(pids)
		if err != nil {
			return nil, err
		}
		start := time.Now()
		n, err := placeThroughSPOE(ctx, t.spoe, aloneDecisions, aloneConns, 1, func(buf []byte, i int) []byte {
			return poolID(buf, i%b.opts.ids)
		})
		if err != nil {
			return nil, fmt.Errorf("%s alone: %w", t.kind, err)
		}
		elapsed := time.Since(start)
		after, err := cpuTimes(pids)
		if err != nil {
			return nil, err
		}
		r := aloneResult{kind: t.kind, decisions: n, rate: float64(n) / elapsed.Seconds()}
		if n > 0 {
			r.agentCPU = (after["stickyd"] - before["stickyd"]) / time.Duration(n)
			r.redisCPU = (after["redis"] - before["redis"]) / time.Duration(n)
		}
		logf("[agent alone] %-20s %7.0f decisions/s  agent CPU %5.1f µs/decision", t.kind, r.rate, us(r.agentCPU))
		out = append(out, r)
	}
	return out, nil
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
