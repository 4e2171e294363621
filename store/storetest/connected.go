package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/stickyd/stickyd/store"
)

// testTouchConnected: store.Toucher keeps connected bindings alive without
// ever creating one, raises (never lowers) expiries, and marks them
// connected for a while.
func testTouchConnected(t *testing.T, s store.Store, clock Clock) {
	tc, ok := s.(store.Toucher)
	if !ok {
		t.Skip("store does not implement store.Toucher")
	}
	mustPut(t, s, store.Binding{Backend: "be", ClientID: "short", Server: "s1", TTL: 2 * time.Second})
	mustPut(t, s, store.Binding{Backend: "be", ClientID: "long", Server: "s1", TTL: time.Hour})
	mustPut(t, s, store.Binding{Backend: "be", ClientID: "pin", Server: "s2", TTL: 2 * time.Second, Pinned: true})
	mustPut(t, s, store.Binding{Backend: "be", ClientID: "forever", Server: "s2"})
	mustPut(t, s, store.Binding{Backend: "be", ClientID: "idle", Server: "s2", TTL: time.Hour})
	n, err := tc.TouchConnected(ctx(), "be", []store.Touch{
		{ClientID: "short", TTL: time.Minute}, {ClientID: "long", TTL: time.Minute},
		{ClientID: "pin", TTL: time.Minute}, {ClientID: "forever", TTL: time.Minute},
		{ClientID: "absent", TTL: time.Minute},
	}, time.Millisecond)
	if err != nil || n != 4 {
		t.Fatalf("TouchConnected = %d, %v; want 4 found", n, err)
	}
	if _, err := s.Get(ctx(), "be", "absent"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("absent id after touch: %v, want ErrNotFound (never created)", err)
	}
	for id, want := range map[string]struct {
		server      string
		pinned      bool
		lo, hi      time.Duration
		isConnected bool
	}{
		"short":   {"s1", false, 59 * time.Second, time.Minute, true},
		"long":    {"s1", false, 59 * time.Minute, time.Hour, true}, // not lowered
		"pin":     {"s2", true, 59 * time.Second, time.Minute, true},
		"forever": {"s2", false, 0, 0, true},
		"idle":    {"s2", false, 59 * time.Minute, time.Hour, false},
	} {
		b := mustGet(t, s, "be", id)
		if b.Server != want.server || b.Pinned != want.pinned || b.TTL < want.lo || b.TTL > want.hi {
			t.Errorf("%s after touch: %+v; want %s pinned=%v ttl in [%v, %v]", id, b, want.server, want.pinned, want.lo, want.hi)
		}
		if id == "idle" && b.Connected {
			t.Errorf("%s: connected without a touch", id)
		}
	}
	// Still the same binding for a claim and a move.
	if c := mustClaim(t, s, "be", "short", "s9", time.Minute); c.Server != "s1" || c.Claimed {
		t.Errorf("claim after touch: %+v, want the existing s1", c)
	}
	if c, err := s.Move(ctx(), "be", "long", "s1", "s3", time.Minute); err != nil || c.Server != "s3" || !c.Claimed {
		t.Errorf("move after touch: %+v, %v", c, err)
	}

	// Marked connected for the given while; counted per server.
	if _, err := tc.TouchConnected(ctx(), "be", []store.Touch{{ClientID: "forever", TTL: time.Minute}, {ClientID: "pin", TTL: time.Minute}}, time.Hour); err != nil {
		t.Fatal(err)
	}
	if b := mustGet(t, s, "be", "forever"); !b.Connected {
		t.Errorf("forever touched for an hour: %+v, want connected", b)
	}
	page, err := s.List(ctx(), "be", store.ListOptions{Limit: store.MaxListLimit})
	if err != nil {
		t.Fatal(err)
	}
	listed := 0
	for _, b := range page.Items {
		if b.Connected {
			listed++
		}
	}
	if listed < 2 {
		t.Errorf("List shows %d connected, want at least 2 (forever, pin)", listed)
	}
	if cc, ok := s.(store.ConnectedCounter); ok {
		bindings, connected, err := cc.CountConnected(ctx(), "be")
		if err != nil {
			t.Fatal(err)
		}
		if bindings["s2"] != 3 || connected["s2"] < 2 {
			t.Errorf("CountConnected: bindings %v connected %v; want s2: 3 bindings, 2+ connected", bindings, connected)
		}
	}
	// The mark lapses (Redis keeps it to the second).
	if _, err := tc.TouchConnected(ctx(), "be", []store.Touch{{ClientID: "forever"}}, time.Millisecond); err != nil {
		t.Fatal(err)
	}
	clock.Advance(2100 * time.Millisecond)
	if b := mustGet(t, s, "be", "forever"); b.Connected {
		t.Errorf("forever 2s after a 1ms mark: %+v, want not connected", b)
	}
	// An evicted binding stays evicted.
	if err := s.Delete(ctx(), "be", "pin"); err != nil {
		t.Fatal(err)
	}
	if n, err := tc.TouchConnected(ctx(), "be", []store.Touch{{ClientID: "pin", TTL: time.Minute}}, time.Hour); err != nil || n != 0 {
		t.Errorf("touch of an evicted binding = %d, %v; want 0", n, err)
	}
	if _, err := s.Get(ctx(), "be", "pin"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("evicted binding after touch: %v, want ErrNotFound", err)
	}
}
