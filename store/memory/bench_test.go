package memory

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// BenchmarkGetOrClaimWarm measures the hot path on existing bindings (read
// lock plus an atomic TTL refresh), spread over 100k clients so lookups
// miss the CPU cache as they would in production. Target: 0 allocs/op.
func BenchmarkGetOrClaimWarm(b *testing.B) {
	ctx := context.Background()
	s := New(Options{})
	b.Cleanup(func() { _ = s.Close() })
	const n = 100000
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("client-%06d", i)
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
			i += 7919
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				if _, err := s.GetOrClaim(ctx, "be", ids[i%n], "s2", time.Hour); err != nil {
					b.Fatal(err)
				}
				i += 7919
			}
		})
	})
}
