package agent

import (
	"context"

	"github.com/stickyd/stickyd/store"
)

// The agent writes no audit entries; the fake only satisfies store.Store.
func (f *fakeStore) AppendAudit(context.Context, store.AuditEntry) error { return nil }

func (f *fakeStore) Audit(context.Context, int) ([]store.AuditEntry, error) { return nil, nil }
