package memory

import (
	"context"
	"sync"

	"github.com/stickyd/stickyd/store"
)

// auditLog is a bounded ring of entries, oldest overwritten.
type auditLog struct {
	mu      sync.Mutex
	entries []store.AuditEntry
	next    int
}

// AppendAudit implements store.Store.
func (s *Store) AppendAudit(_ context.Context, e store.AuditEntry) error {
	a := &s.audit
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.entries) < store.MaxAuditEntries {
		a.entries = append(a.entries, e)
		return nil
	}
	a.entries[a.next] = e
	a.next = (a.next + 1) % store.MaxAuditEntries
	return nil
}

// Audit implements store.Store: newest first.
func (s *Store) Audit(_ context.Context, limit int) ([]store.AuditEntry, error) {
	a := &s.audit
	a.mu.Lock()
	defer a.mu.Unlock()
	n := len(a.entries)
	if limit <= 0 || limit > n {
		limit = n
	}
	out := make([]store.AuditEntry, 0, limit)
	// The newest is just before next (or the last appended while filling).
	last := n - 1
	if n == store.MaxAuditEntries {
		last = (a.next - 1 + n) % n
	}
	for i := 0; i < limit; i++ {
		out = append(out, a.entries[(last-i+n)%n])
	}
	return out, nil
}
