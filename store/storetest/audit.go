package storetest

import (
	"fmt"
	"testing"
	"time"

	"github.com/stickyd/stickyd/store"
)

// testAudit: entries come back newest first, whole (odd bytes included),
// and the trail keeps only the latest MaxAuditEntries.
func testAudit(t *testing.T, s store.Store, _ Clock) {
	got, err := s.Audit(ctx(), 10)
	if err != nil || len(got) != 0 {
		t.Fatalf("empty trail: %v %v", got, err)
	}
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	first := store.AuditEntry{Time: t0, Actor: "admin", Remote: "127.0.0.1", Action: "pin", Backend: "mqtt",
		Target: "bin\x00\xff/%", Before: "", After: `{"server":"n1"}`}
	if err := s.AppendAudit(ctx(), first); err != nil {
		t.Fatal(err)
	}
	for i := 1; i < store.MaxAuditEntries+5; i++ {
		e := store.AuditEntry{Time: t0.Add(time.Duration(i) * time.Second), Actor: "admin", Action: "evict", Backend: "mqtt", Target: fmt.Sprintf("c%d", i)}
		if err := s.AppendAudit(ctx(), e); err != nil {
			t.Fatal(err)
		}
		if i == 1 {
			got, err := s.Audit(ctx(), 5)
			if err != nil || len(got) != 2 || got[0].Target != "c1" || !got[1].Time.Equal(t0) || got[1].Target != first.Target || got[1].After != first.After {
				t.Fatalf("after two: %+v %v", got, err)
			}
		}
	}
	got, err = s.Audit(ctx(), 3)
	if err != nil || len(got) != 3 {
		t.Fatalf("latest 3: %+v %v", got, err)
	}
	last := store.MaxAuditEntries + 4
	for i, e := range got {
		if want := fmt.Sprintf("c%d", last-i); e.Target != want {
			t.Errorf("entry %d: %q, want %q", i, e.Target, want)
		}
	}
	all, err := s.Audit(ctx(), 0)
	if err != nil || len(all) != store.MaxAuditEntries {
		t.Fatalf("whole trail: %d entries, %v; want %d", len(all), err, store.MaxAuditEntries)
	}
	if oldest := all[len(all)-1].Target; oldest != "c5" {
		t.Fatalf("oldest kept %q, want c5", oldest)
	}
}
