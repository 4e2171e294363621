package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// Memory at scale. Each store gets a fresh agent that places scale new
// clients through SPOE, exactly as HAProxy would ask (one NOTIFY per
// CONNECT, pipelined), so the bindings are written by the real code path:
// the agent's decision and the store's get-or-claim (on Redis, its script:
// same buckets, values and TTL as in production). The Redis agent writes to
// an empty database (1), so INFO's used_memory grows by exactly those
// bindings.

type scaleResult struct {
	n int
	// Memory store.
	memPlaced       int64
	memRate         float64
	memRSS0, memRSS int64
	// Redis.
	redisPlaced             int64
	redisRate               float64
	redisKeys               int64 // bucket keys created
	redisUsed0, redisUsed   int64
	redisRSS0, redisRSSPeak int64
	redisRSS                int64
}

// scaleDB is the Redis database the scale agent writes to.
const scaleDB = 1

func (b *bench) scale(ctx context.Context) (*scaleResult, error) {
	res := &scaleResult{n: b.opts.scale}

	logf("scale: %d new clients through a fresh agent on the memory store", res.n)
	a, spoe, err := b.startScaleAgent(ctx, "scale-memory", "")
	if err != nil {
		return nil, err
	}
	if res.memRSS0, err = rssBytes(a.pid()); err != nil {
		return nil, err
	}
	start := time.Now()
	if res.memPlaced, err = placeThroughSPOE(ctx, spoe, res.n, 4, 64, scaleID("scale-m-")); err != nil {
		return nil, fmt.Errorf("memory store fill: %w", err)
	}
	res.memRate = float64(res.memPlaced) / time.Since(start).Seconds()
	if res.memRSS, err = rssBytes(a.pid()); err != nil {
		return nil, err
	}
	a.stop() // give its memory back before the Redis part

	logf("scale: %d new clients through a fresh agent on Redis (database %d)", res.n, scaleDB)
	rdb := goredis.NewClient(&goredis.Options{Addr: b.redisAddr, DB: scaleDB})
	defer rdb.Close()
	keys0, used0, err := redisUsage(ctx, rdb)
	if err != nil {
		return nil, err
	}
	a, spoe, err = b.startScaleAgent(ctx, "scale-redis", fmt.Sprintf("redis://%s/%d", b.redisAddr, scaleDB))
	if err != nil {
		return nil, err
	}
	if res.redisRSS0, err = rssBytes(a.pid()); err != nil {
		return nil, err
	}
	stopRSS := sampleRSS(a.pid(), &res.redisRSSPeak)
	start = time.Now()
	res.redisPlaced, err = placeThroughSPOE(ctx, spoe, res.n, 4, 32, scaleID("scale-r-"))
	res.redisRate = float64(res.redisPlaced) / time.Since(start).Seconds()
	stopRSS()
	if err != nil {
		return nil, fmt.Errorf("redis fill: %w", err)
	}
	if res.redisRSS, err = rssBytes(a.pid()); err != nil {
		return nil, err
	}
	keys1, used1, err := redisUsage(ctx, rdb)
	if err != nil {
		return nil, err
	}
	res.redisKeys, res.redisUsed0, res.redisUsed = keys1-keys0, used0, used1
	return res, nil
}

// bytesPerBinding is Redis's used_memory growth per binding the fill
// created (each placement is a new client: one binding).
func (r *scaleResult) bytesPerBinding() float64 {
	if r.redisPlaced == 0 {
		return 0
	}
	return float64(r.redisUsed-r.redisUsed0) / float64(r.redisPlaced)
}

// scaleID numbers 24-byte client ids under a prefix of 8 bytes.
func scaleID(prefix string) func([]byte, int) []byte {
	return func(buf []byte, i int) []byte {
		return strconv.AppendInt(append(buf[:0], prefix...), 1e15+int64(i), 10)
	}
}

// startScaleAgent starts an agent with no HAProxy in front and its API off.
func (b *bench) startScaleAgent(ctx context.Context, name, redisURL string) (*proc, string, error) {
	dir := filepath.Join(b.dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, "", fmt.Errorf("%s: %w", name, err)
	}
	spoe, err := freeAddr()
	if err != nil {
		return nil, "", err
	}
	front, err := freeAddr()
	if err != nil {
		return nil, "", err
	}
	yml := filepath.Join(dir, "stickyd.yaml")
	err = writeTemplate(yml, stickydConfig, map[string]any{
		"SPOE": spoe, "API": "", "Redis": redisURL, "Front": front,
		// Room for every client it places, whatever the store's default cap.
		"MaxBindings": 2 * max(b.opts.scale, 1_000_000),
		// Never dialled: the agent only names servers.
		"Brokers": []brokerView{{"n1", "127.0.0.1:1", 1}, {"n2", "127.0.0.1:2", 2}},
	})
	if err != nil {
		return nil, "", err
	}
	a, err := b.start(dir, "stickyd", b.opts.stickyd, "serve", "--config", yml)
	if err != nil {
		return nil, "", err
	}
	return a, spoe, waitTCP(ctx, a, spoe, 15*time.Second)
}

// redisUsage returns the database's key count and Redis's used_memory.
func redisUsage(ctx context.Context, rdb *goredis.Client) (keys, used int64, err error) {
	if keys, err = rdb.DBSize(ctx).Result(); err != nil {
		return 0, 0, fmt.Errorf("redis dbsize: %w", err)
	}
	info, err := rdb.Info(ctx, "memory").Result()
	if err != nil {
		return 0, 0, fmt.Errorf("redis info: %w", err)
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
			used, err = strconv.ParseInt(v, 10, 64)
			if err != nil {
				return 0, 0, fmt.Errorf("redis used_memory: %w", err)
			}
			return keys, used, nil
		}
	}
	return 0, 0, fmt.Errorf("redis info: no used_memory")
}
