package metrics

import (
	"context"

	"github.com/stickyd/stickyd/store"
)

// AppendAudit passes through, uncounted: it is not on the connect path.
func (s *instrumentedStore) AppendAudit(ctx context.Context, e store.AuditEntry) error {
	return s.st.AppendAudit(ctx, e)
}

// Audit passes through, uncounted.
func (s *instrumentedStore) Audit(ctx context.Context, limit int) ([]store.AuditEntry, error) {
	return s.st.Audit(ctx, limit)
}
