// Package storetest is the contract suite every store.Store implementation
// passes. An implementation's test calls Run with a constructor and a Clock.
package storetest

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stickyd/stickyd/store"
)

// Clock makes time pass for the store under test.
type Clock interface {
	// Advance lets d pass: a fake clock jumps, a real one sleeps.
	Advance(d time.Duration)
}

// FakeClock is a manual clock; pass its Now to the store under test.
type FakeClock struct {
	mu  sync.Mutex
	now time.Time
}

// NewFakeClock returns a clock set to a fixed, arbitrary instant.
func NewFakeClock() *FakeClock {
	return &FakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

// Now returns the clock's current time.
func (c *FakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *FakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// RealClock is wall time, for stores whose clock cannot be faked (Redis).
type RealClock struct{}

// Advance sleeps for d.
func (RealClock) Advance(d time.Duration) { time.Sleep(d) }

// TTL is the lifetime the suite gives expiring bindings. It is short because
// a real clock sleeps through it; the margins around it (at least 0.2*TTL)
// absorb scheduling noise.
const TTL = 1500 * time.Millisecond

const (
	be  = "be"
	be2 = "be2"
)

// OddClientIDs are client ids that must round-trip byte for byte.
func OddClientIDs() []string {
	long := make([]byte, store.MaxClientIDLen)
	for i := range long {
		long[i] = byte('a' + i%26)
	}
	return []string{
		"",
		"a/b",
		"a%2Fb",
		"with space",
		"ünïcödé",
		"bin\x00ary\xff\xfe\x00",
		"*?[]\\",
		"*",
		"[a-z]",
		"{tag}",
		"a:b:c",
		string(long),
	}
}

// Run runs the contract suite. newStore returns a fresh, empty store per
// subtest (closing it is the constructor's job, via t.Cleanup).
func Run(t *testing.T, newStore func(t *testing.T) store.Store, clock Clock) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store, clock Clock)
	}{
		{"ClaimFirstWriterWins", testClaimFirstWriterWins},
		{"ConcurrentClaimsOneWinner", testConcurrentClaims},
		{"TTLLifecycle", testTTLLifecycle},
		{"Move", testMove},
		{"GetNotFound", testGetNotFound},
		{"PutOverrides", testPutOverrides},
		{"Delete", testDelete},
		{"OddClientIDs", testOddClientIDs},
		{"ListPaging", testListPaging},
		{"ListFilters", testListFilters},
		{"ListBadCursor", testListBadCursor},
		{"CountByServer", testCountByServer},
		{"DeleteByServer", testDeleteByServer},
		{"BackendIsolation", testBackendIsolation},
		{"Draining", testDraining},
		{"AuditTrail", testAudit},              // audit.go
		{"TouchConnected", testTouchConnected}, // connected.go
		{"Ping", func(t *testing.T, s store.Store, _ Clock) {
			if err := s.Ping(context.Background()); err != nil {
				t.Fatalf("Ping: %v", err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, newStore(t), clock)
		})
	}
}

func ctx() context.Context { return context.Background() }

func mustClaim(t *testing.T, s store.Store, backend, id, proposed string, ttl time.Duration) store.Claim {
	t.Helper()
	c, err := s.GetOrClaim(ctx(), backend, id, proposed, ttl)
	if err != nil {
		t.Fatalf("GetOrClaim(%s, %.40q, %s): %v", backend, id, proposed, err)
	}
	return c
}

func mustPut(t *testing.T, s store.Store, b store.Binding) {
	t.Helper()
	if err := s.Put(ctx(), b); err != nil {
		t.Fatalf("Put(%+v): %v", b, err)
	}
}

func mustGet(t *testing.T, s store.Store, backend, id string) store.Binding {
	t.Helper()
	b, err := s.Get(ctx(), backend, id)
	if err != nil {
		t.Fatalf("Get(%s, %.40q): %v", backend, id, err)
	}
	return b
}

func wantNotFound(t *testing.T, s store.Store, backend, id string) {
	t.Helper()
	b, err := s.Get(ctx(), backend, id)
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get(%s, %.40q) = %+v, %v; want ErrNotFound", backend, id, b, err)
	}
}

func wantClaim(t *testing.T, got store.Claim, server string, pinned, claimed bool) {
	t.Helper()
	want := store.Claim{Server: server, Pinned: pinned, Claimed: claimed}
	if got != want {
		t.Fatalf("claim = %+v, want %+v", got, want)
	}
}

func testClaimFirstWriterWins(t *testing.T, s store.Store, _ Clock) {
	wantClaim(t, mustClaim(t, s, be, "c1", "s1", TTL), "s1", false, true)
	wantClaim(t, mustClaim(t, s, be, "c1", "s2", TTL), "s1", false, false)
	if b := mustGet(t, s, be, "c1"); b.Server != "s1" || b.Backend != be || b.ClientID != "c1" || b.Pinned {
		t.Fatalf("Get = %+v", b)
	}
	if b := mustGet(t, s, be, "c1"); b.TTL <= 0 || b.TTL > TTL {
		t.Fatalf("TTL = %v, want in (0, %v]", b.TTL, TTL)
	}
}

func testConcurrentClaims(t *testing.T, s store.Store, _ Clock) {
	const n = 50
	var wg sync.WaitGroup
	claims := make([]store.Claim, n)
	errs := make([]error, n)
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			claims[i], errs[i] = s.GetOrClaim(ctx(), be, "race", fmt.Sprintf("s%d", i), TTL)
		}()
	}
	close(start)
	wg.Wait()
	winners := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("goroutine %d: %v", i, errs[i])
		}
		if claims[i].Server != claims[0].Server {
			t.Fatalf("goroutine %d saw %q, goroutine 0 saw %q", i, claims[i].Server, claims[0].Server)
		}
		if claims[i].Claimed {
			winners++
		}
	}
	if winners != 1 {
		t.Fatalf("%d goroutines report Claimed, want exactly 1", winners)
	}
	if b := mustGet(t, s, be, "race"); b.Server != claims[0].Server {
		t.Fatalf("stored %q, claims saw %q", b.Server, claims[0].Server)
	}
}

// testTTLLifecycle runs on one timeline so a real clock sleeps only 2.3*TTL.
func testTTLLifecycle(t *testing.T, s store.Store, clock Clock) {
	// t = 0
	wantClaim(t, mustClaim(t, s, be, "A", "sA", TTL), "sA", false, true)
	mustPut(t, s, store.Binding{Backend: be, ClientID: "P", Server: "sP", TTL: TTL, Pinned: true})
	wantClaim(t, mustClaim(t, s, be, "N", "sN", 0), "sN", false, true)
	mustPut(t, s, store.Binding{Backend: be, ClientID: "K", Server: "sX"})
	mustPut(t, s, store.Binding{Backend: be, ClientID: "E1", Server: "sX", TTL: TTL})
	mustPut(t, s, store.Binding{Backend: be, ClientID: "E2", Server: "sY", TTL: TTL})
	if b := mustGet(t, s, be, "N"); b.TTL != 0 {
		t.Fatalf("N TTL = %v, want 0 (no expiry)", b.TTL)
	}

	clock.Advance(TTL * 6 / 10) // t = 0.6 TTL
	wantClaim(t, mustClaim(t, s, be, "A", "other", TTL), "sA", false, false)
	if b := mustGet(t, s, be, "A"); b.TTL <= TTL/2 || b.TTL > TTL {
		t.Fatalf("A TTL after refresh = %v, want reset to about %v", b.TTL, TTL)
	}
	wantClaim(t, mustClaim(t, s, be, "P", "other", TTL), "sP", true, false)
	if b := mustGet(t, s, be, "P"); b.TTL <= 0 || b.TTL > TTL/2 {
		t.Fatalf("pinned P TTL = %v, want not refreshed (about %v)", b.TTL, TTL*4/10)
	}
	wantClaim(t, mustClaim(t, s, be, "N", "other", TTL), "sN", false, false)
	if b := mustGet(t, s, be, "N"); b.TTL != 0 {
		t.Fatalf("N TTL = %v after GetOrClaim, want still 0 (no expiry)", b.TTL)
	}
	c, err := s.Move(ctx(), be, "P", "sP", "other", TTL)
	if err != nil {
		t.Fatalf("Move pinned: %v", err)
	}
	wantClaim(t, c, "sP", true, false)

	clock.Advance(TTL * 6 / 10) // t = 1.2 TTL
	if b := mustGet(t, s, be, "A"); b.Server != "sA" {
		t.Fatalf("A = %+v", b)
	}
	for _, id := range []string{"P", "E1", "E2"} {
		wantNotFound(t, s, be, id)
	}
	got := listAll(t, s, be, store.ListOptions{})
	wantIDs(t, got, "A", "N", "K")
	counts, err := s.CountByServer(ctx(), be)
	if err != nil {
		t.Fatalf("CountByServer: %v", err)
	}
	wantCounts(t, counts, map[string]int{"sA": 1, "sN": 1, "sX": 1})

	clock.Advance(TTL * 11 / 10) // t = 2.3 TTL
	wantNotFound(t, s, be, "A")
	wantClaim(t, mustClaim(t, s, be, "A", "sA2", TTL), "sA2", false, true)
	if b := mustGet(t, s, be, "N"); b.Server != "sN" {
		t.Fatalf("N = %+v", b)
	}
}

func testMove(t *testing.T, s store.Store, _ Clock) {
	mustClaim(t, s, be, "c", "s1", TTL)
	c, err := s.Move(ctx(), be, "c", "s1", "s2", TTL)
	if err != nil {
		t.Fatalf("Move: %v", err)
	}
	wantClaim(t, c, "s2", false, true)
	if b := mustGet(t, s, be, "c"); b.Server != "s2" || b.TTL <= 0 || b.TTL > TTL {
		t.Fatalf("after Move: %+v", b)
	}

	// Lost race: someone already moved it away from s1.
	c, err = s.Move(ctx(), be, "c", "s1", "s3", TTL)
	if err != nil {
		t.Fatalf("Move: %v", err)
	}
	wantClaim(t, c, "s2", false, false)

	// Missing: Move claims.
	c, err = s.Move(ctx(), be, "missing", "s1", "s4", 0)
	if err != nil {
		t.Fatalf("Move: %v", err)
	}
	wantClaim(t, c, "s4", false, true)
	if b := mustGet(t, s, be, "missing"); b.Server != "s4" || b.TTL != 0 {
		t.Fatalf("after Move on missing: %+v", b)
	}

	// Pinned without expiry: not moved.
	mustPut(t, s, store.Binding{Backend: be, ClientID: "p", Server: "s1", Pinned: true})
	c, err = s.Move(ctx(), be, "p", "s1", "s2", TTL)
	if err != nil {
		t.Fatalf("Move: %v", err)
	}
	wantClaim(t, c, "s1", true, false)
	if b := mustGet(t, s, be, "p"); b.Server != "s1" || !b.Pinned || b.TTL != 0 {
		t.Fatalf("pinned after Move: %+v", b)
	}

	counts, err := s.CountByServer(ctx(), be)
	if err != nil {
		t.Fatalf("CountByServer: %v", err)
	}
	wantCounts(t, counts, map[string]int{"s2": 1, "s4": 1, "s1": 1})
}

func testGetNotFound(t *testing.T, s store.Store, _ Clock) {
	wantNotFound(t, s, be, "nobody")
	wantNotFound(t, s, "no-such-backend", "nobody")
	mustClaim(t, s, be, "somebody", "s1", TTL)
	wantNotFound(t, s, be, "nobody")
	wantNotFound(t, s, be, "somebod")
	wantNotFound(t, s, be, "somebody2")
}

func testPutOverrides(t *testing.T, s store.Store, _ Clock) {
	mustPut(t, s, store.Binding{Backend: be, ClientID: "c", Server: "s1", TTL: TTL})
	mustPut(t, s, store.Binding{Backend: be, ClientID: "c", Server: "s2", Pinned: true})
	want := store.Binding{Backend: be, ClientID: "c", Server: "s2", Pinned: true}
	if b := mustGet(t, s, be, "c"); b != want {
		t.Fatalf("Get = %+v, want %+v", b, want)
	}
	wantClaim(t, mustClaim(t, s, be, "c", "s3", TTL), "s2", true, false)
	mustPut(t, s, store.Binding{Backend: be, ClientID: "c", Server: "s3", TTL: TTL})
	if b := mustGet(t, s, be, "c"); b.Server != "s3" || b.Pinned || b.TTL <= 0 || b.TTL > TTL {
		t.Fatalf("Get = %+v after unpinning Put", b)
	}
	counts, err := s.CountByServer(ctx(), be)
	if err != nil {
		t.Fatalf("CountByServer: %v", err)
	}
	wantCounts(t, counts, map[string]int{"s3": 1})
}

func testDelete(t *testing.T, s store.Store, _ Clock) {
	if err := s.Delete(ctx(), be, "c"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Delete missing = %v, want ErrNotFound", err)
	}
	mustClaim(t, s, be, "c", "s1", TTL)
	mustClaim(t, s, be, "d", "s1", TTL)
	if err := s.Delete(ctx(), be, "c"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	wantNotFound(t, s, be, "c")
	if err := s.Delete(ctx(), be, "c"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second Delete = %v, want ErrNotFound", err)
	}
	mustGet(t, s, be, "d")
	counts, err := s.CountByServer(ctx(), be)
	if err != nil {
		t.Fatalf("CountByServer: %v", err)
	}
	wantCounts(t, counts, map[string]int{"s1": 1})
	// Deleted means claimable again.
	wantClaim(t, mustClaim(t, s, be, "c", "s2", TTL), "s2", false, true)
}

func testOddClientIDs(t *testing.T, s store.Store, _ Clock) {
	ids := OddClientIDs()
	for i, id := range ids {
		server := fmt.Sprintf("s%d", i)
		wantClaim(t, mustClaim(t, s, be, id, server, TTL), server, false, true)
		b := mustGet(t, s, be, id)
		if b.ClientID != id || b.Server != server {
			t.Fatalf("id %d: Get = {ClientID %.40q Server %q}", i, b.ClientID, b.Server)
		}
	}
	got := listAll(t, s, be, store.ListOptions{})
	wantIDs(t, got, ids...)

	// Each id used as a prefix filter must match literally: glob
	// metacharacters select nothing extra.
	for i, id := range ids {
		var want []string
		for _, other := range ids {
			if strings.HasPrefix(other, id) {
				want = append(want, other)
			}
		}
		got := listAll(t, s, be, store.ListOptions{Prefix: id})
		if len(got) != len(want) {
			t.Errorf("id %d (%.40q) as prefix: got %d ids, want %d", i, id, len(got), len(want))
		}
		wantIDs(t, got, want...)
	}

	for i, id := range ids {
		if err := s.Delete(ctx(), be, id); err != nil {
			t.Fatalf("id %d: Delete: %v", i, err)
		}
		wantNotFound(t, s, be, id)
	}
	if got := listAll(t, s, be, store.ListOptions{}); len(got) != 0 {
		t.Fatalf("after deleting all: %d left", len(got))
	}
}

const pagingN = 2500

func pagingID(i int) string     { return fmt.Sprintf("c%04d", i) }
func pagingServer(i int) string { return fmt.Sprintf("s%d", i%5) }

func fillPaging(t *testing.T, s store.Store) {
	t.Helper()
	for i := range pagingN {
		mustPut(t, s, store.Binding{Backend: be, ClientID: pagingID(i), Server: pagingServer(i), TTL: time.Hour})
	}
}

func testListPaging(t *testing.T, s store.Store, _ Clock) {
	fillPaging(t, s)
	got := listAll(t, s, be, store.ListOptions{Limit: 100})
	var want []string
	for i := range pagingN {
		want = append(want, pagingID(i))
	}
	wantIDs(t, got, want...)
	for i := range pagingN {
		b := got[pagingID(i)]
		if b.Server != pagingServer(i) || b.Backend != be || b.TTL <= 0 || b.TTL > time.Hour || b.Pinned {
			t.Fatalf("listed %+v", b)
		}
	}
	// Default, clamped and tiny page sizes (listAll checks each page's size).
	wantIDs(t, listAll(t, s, be, store.ListOptions{}), want...)
	wantIDs(t, listAll(t, s, be, store.ListOptions{Limit: 1 << 20}), want...)
	wantIDs(t, listAll(t, s, be, store.ListOptions{Limit: 7}), want...)
	wantIDs(t, listAll(t, s, be, store.ListOptions{Limit: 1, Prefix: "c01"}), want[100:200]...)
}

func testListFilters(t *testing.T, s store.Store, _ Clock) {
	fillPaging(t, s)
	mustPut(t, s, store.Binding{Backend: be, ClientID: "c0007x", Server: "pinned", Pinned: true})

	var byServer []string
	for i := range pagingN {
		if pagingServer(i) == "s1" {
			byServer = append(byServer, pagingID(i))
		}
	}
	wantIDs(t, listAll(t, s, be, store.ListOptions{Server: "s1", Limit: 50}), byServer...)
	wantIDs(t, listAll(t, s, be, store.ListOptions{Server: "pinned", Limit: 10}), "c0007x")
	wantIDs(t, listAll(t, s, be, store.ListOptions{Server: "nobody"}))

	var byPrefix []string
	for i := range 100 {
		byPrefix = append(byPrefix, pagingID(i))
	}
	byPrefix = append(byPrefix, "c0007x")
	wantIDs(t, listAll(t, s, be, store.ListOptions{Prefix: "c00", Limit: 30}), byPrefix...)
	wantIDs(t, listAll(t, s, be, store.ListOptions{Prefix: "c0007"}), "c0007", "c0007x")
	wantIDs(t, listAll(t, s, be, store.ListOptions{Prefix: "c0007", Server: "pinned"}), "c0007x")
	wantIDs(t, listAll(t, s, be, store.ListOptions{Prefix: "zzz"}))
	wantIDs(t, listAll(t, s, be, store.ListOptions{Prefix: "c0*"}))
	if b := listAll(t, s, be, store.ListOptions{Prefix: "c0007x"})["c0007x"]; !b.Pinned || b.TTL != 0 {
		t.Fatalf("listed pinned binding as %+v", b)
	}
}

func testListBadCursor(t *testing.T, s store.Store, _ Clock) {
	fillPaging(t, s)
	for _, c := range []string{
		"%%%not base64",
		base64.RawURLEncoding.EncodeToString([]byte("garbage")),
		base64.RawURLEncoding.EncodeToString([]byte{0xff, 0xff, 0xff}),
		"AA",
	} {
		_, err := s.List(ctx(), be, store.ListOptions{Cursor: c})
		if !errors.Is(err, store.ErrBadCursor) {
			t.Errorf("List(cursor %q) = %v, want ErrBadCursor", c, err)
		}
	}
}

func testCountByServer(t *testing.T, s store.Store, _ Clock) {
	counts, err := s.CountByServer(ctx(), be)
	if err != nil {
		t.Fatalf("CountByServer empty: %v", err)
	}
	wantCounts(t, counts, map[string]int{})
	for i := range 30 {
		mustClaim(t, s, be, fmt.Sprintf("c%d", i), fmt.Sprintf("s%d", i%3), TTL)
	}
	mustPut(t, s, store.Binding{Backend: be, ClientID: "pinned", Server: "s0", Pinned: true})
	mustPut(t, s, store.Binding{Backend: be, ClientID: "c0", Server: "s9"}) // replaces an s0
	counts, err = s.CountByServer(ctx(), be)
	if err != nil {
		t.Fatalf("CountByServer: %v", err)
	}
	wantCounts(t, counts, map[string]int{"s0": 10, "s1": 10, "s2": 10, "s9": 1})
}

func testDeleteByServer(t *testing.T, s store.Store, _ Clock) {
	for i := range 30 {
		mustClaim(t, s, be, fmt.Sprintf("c%d", i), fmt.Sprintf("s%d", i%3), TTL)
	}
	mustPut(t, s, store.Binding{Backend: be, ClientID: "pinned", Server: "s1", Pinned: true})
	mustClaim(t, s, be2, "c1", "s1", TTL)

	n, err := s.DeleteByServer(ctx(), be, "s1")
	if err != nil {
		t.Fatalf("DeleteByServer: %v", err)
	}
	if n != 11 {
		t.Fatalf("DeleteByServer = %d, want 11", n)
	}
	wantNotFound(t, s, be, "c1")
	wantNotFound(t, s, be, "pinned")
	if b := mustGet(t, s, be, "c0"); b.Server != "s0" {
		t.Fatalf("c0 = %+v", b)
	}
	if b := mustGet(t, s, be2, "c1"); b.Server != "s1" {
		t.Fatalf("other backend's binding = %+v", b)
	}
	counts, err := s.CountByServer(ctx(), be)
	if err != nil {
		t.Fatalf("CountByServer: %v", err)
	}
	wantCounts(t, counts, map[string]int{"s0": 10, "s2": 10})
	if n, err := s.DeleteByServer(ctx(), be, "s1"); err != nil || n != 0 {
		t.Fatalf("second DeleteByServer = %d, %v; want 0", n, err)
	}
	if n, err := s.DeleteByServer(ctx(), "no-such-backend", "s1"); err != nil || n != 0 {
		t.Fatalf("DeleteByServer on empty backend = %d, %v; want 0", n, err)
	}
}

func testBackendIsolation(t *testing.T, s store.Store, _ Clock) {
	// "be" is a prefix of "be2": keys must not bleed across.
	wantClaim(t, mustClaim(t, s, be, "c", "s1", TTL), "s1", false, true)
	wantClaim(t, mustClaim(t, s, be2, "c", "s2", TTL), "s2", false, true)
	wantClaim(t, mustClaim(t, s, be, "2:c", "s3", TTL), "s3", false, true)
	if b := mustGet(t, s, be2, "c"); b.Server != "s2" || b.Backend != be2 {
		t.Fatalf("be2/c = %+v", b)
	}
	wantIDs(t, listAll(t, s, be, store.ListOptions{}), "c", "2:c")
	wantIDs(t, listAll(t, s, be2, store.ListOptions{}), "c")
	counts, err := s.CountByServer(ctx(), be2)
	if err != nil {
		t.Fatalf("CountByServer: %v", err)
	}
	wantCounts(t, counts, map[string]int{"s2": 1})
	if err := s.Delete(ctx(), be, "c"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	mustGet(t, s, be2, "c")
	if err := s.SetDraining(ctx(), be, "s1", true); err != nil {
		t.Fatalf("SetDraining: %v", err)
	}
	d, err := s.Draining(ctx(), be2)
	if err != nil || len(d) != 0 {
		t.Fatalf("Draining(be2) = %v, %v; want empty", d, err)
	}
}

func testDraining(t *testing.T, s store.Store, _ Clock) {
	d, err := s.Draining(ctx(), be)
	if err != nil || len(d) != 0 {
		t.Fatalf("Draining = %v, %v; want empty", d, err)
	}
	for _, step := range []struct {
		server string
		on     bool
	}{{"s1", true}, {"s2", true}, {"s1", true}, {"s2", false}, {"s3", false}} {
		if err := s.SetDraining(ctx(), be, step.server, step.on); err != nil {
			t.Fatalf("SetDraining(%s, %v): %v", step.server, step.on, err)
		}
	}
	d, err = s.Draining(ctx(), be)
	if err != nil {
		t.Fatalf("Draining: %v", err)
	}
	if len(d) != 1 || !d["s1"] {
		t.Fatalf("Draining = %v, want {s1}", d)
	}
}

// listAll pages through List to the end. Every page must respect the
// limit; an id may repeat across pages (SCAN may return a key twice) but
// must then describe the same binding.
func listAll(t *testing.T, s store.Store, backend string, opts store.ListOptions) map[string]store.Binding {
	t.Helper()
	limit := opts.Limit
	if limit <= 0 {
		limit = store.DefaultListLimit
	}
	limit = min(limit, store.MaxListLimit)
	got := make(map[string]store.Binding)
	for pages := 0; ; pages++ {
		if pages > 100000 {
			t.Fatalf("List did not finish after %d pages", pages)
		}
		p, err := s.List(ctx(), backend, opts)
		if err != nil {
			t.Fatalf("List(%+v): %v", opts, err)
		}
		if len(p.Items) > limit {
			t.Fatalf("page of %d items, limit %d", len(p.Items), limit)
		}
		for _, b := range p.Items {
			if b.Backend != backend {
				t.Fatalf("listed %+v from backend %q", b, backend)
			}
			if opts.Server != "" && b.Server != opts.Server {
				t.Fatalf("listed %+v with server filter %q", b, opts.Server)
			}
			if !strings.HasPrefix(b.ClientID, opts.Prefix) {
				t.Fatalf("listed %.40q with prefix filter %.40q", b.ClientID, opts.Prefix)
			}
			if prev, dup := got[b.ClientID]; dup && (prev.Server != b.Server || prev.Pinned != b.Pinned) {
				t.Fatalf("id %.40q listed twice, differently: %+v, %+v", b.ClientID, prev, b)
			}
			got[b.ClientID] = b
		}
		if p.NextCursor == "" {
			return got
		}
		opts.Cursor = p.NextCursor
	}
}

func wantIDs(t *testing.T, got map[string]store.Binding, want ...string) {
	t.Helper()
	w := make(map[string]bool, len(want))
	for _, id := range want {
		w[id] = true
		if _, ok := got[id]; !ok {
			t.Errorf("missing id %.40q (len %d)", id, len(id))
		}
	}
	for id := range got {
		if !w[id] {
			t.Errorf("unexpected id %.40q (len %d)", id, len(id))
		}
	}
	if t.Failed() {
		t.FailNow()
	}
}

func wantCounts(t *testing.T, got, want map[string]int) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("counts = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("counts = %v, want %v", got, want)
		}
	}
}
