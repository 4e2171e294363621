package redis

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stickyd/stickyd/internal/testenv"
)

// BenchmarkGetOrClaimWarm measures the hot path on an existing binding
// against a local redis-server: one script round trip with a TTL refresh.
func BenchmarkGetOrClaimWarm(b *testing.B) {
	ctx := context.Background()
	r := testenv.StartRedis(b)
	s := newTestStore(b, r)
	const n = 1000
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("client-%04d", i)
		if _, err := s.GetOrClaim(ctx, "be", ids[i], "s1", time.Hour); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, err := s.GetOrClaim(ctx, "be", ids[i%n], "s2", time.Hour); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.SetParallelism(8) // 16 goroutines on 2 cores: round trips overlap
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				if _, err := s.GetOrClaim(ctx, "be", ids[i%n], "s2", time.Hour); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	})
}

// BenchmarkTryGetOrClaimCached is a reconnect answered by the local cache:
// no round trip (a refresh is queued at most every ttl/16 per binding).
func BenchmarkTryGetOrClaimCached(b *testing.B) {
	ctx := context.Background()
	r := testenv.StartRedis(b)
	s, err := New(ctx, Options{URL: r.URL, CacheSize: 100000})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	deadline := time.Now().Add(10 * time.Second)
	for !s.CacheStats().Enabled {
		if time.Now().After(deadline) {
			b.Fatal("the cache never subscribed")
		}
		time.Sleep(5 * time.Millisecond)
	}
	const n = 1000
	ids := make([][]byte, n)
	for i := range ids {
		ids[i] = fmt.Appendf(nil, "client-%04d", i)
		if _, err := s.GetOrClaim(ctx, "be", string(ids[i]), "s1", time.Hour); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, ok := s.TryGetOrClaim("be", ids[i%n], "s2", time.Hour); !ok {
			b.Fatal("cache miss")
		}
		i++
	}
}
