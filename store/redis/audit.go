package redis

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/stickyd/stickyd/store"
)

// auditRecord is an entry as stored: the target as bytes (base64 in
// JSON), since a client id need not be UTF-8.
type auditRecord struct {
	store.AuditEntry
	Target []byte `json:"target"`
}

// auditKey is one list (one hash slot on a cluster), newest at the head.
func (s *Store) auditKey() string { return s.prefix + "audit" }

// AppendAudit implements store.Store: LPUSH then LTRIM in one transaction,
// so the list never holds more than store.MaxAuditEntries.
func (s *Store) AppendAudit(ctx context.Context, e store.AuditEntry) error {
	data, err := json.Marshal(auditRecord{AuditEntry: e, Target: []byte(e.Target)})
	if err != nil {
		return fmt.Errorf("redis audit: %w", err)
	}
	pipe := s.rdb.TxPipeline()
	pipe.LPush(ctx, s.auditKey(), data)
	pipe.LTrim(ctx, s.auditKey(), 0, store.MaxAuditEntries-1)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("redis audit: %w", err)
	}
	return nil
}

// Audit implements store.Store: newest first.
func (s *Store) Audit(ctx context.Context, limit int) ([]store.AuditEntry, error) {
	if limit <= 0 || limit > store.MaxAuditEntries {
		limit = store.MaxAuditEntries
	}
	items, err := s.rdb.LRange(ctx, s.auditKey(), 0, int64(limit-1)).Result()
	if err != nil {
		return nil, fmt.Errorf("redis audit: %w", err)
	}
	out := make([]store.AuditEntry, 0, len(items))
	for _, it := range items {
		var r auditRecord
		if err := json.Unmarshal([]byte(it), &r); err != nil {
			continue // not ours; the trail is best effort
		}
		r.AuditEntry.Target = string(r.Target)
		out = append(out, r.AuditEntry)
	}
	return out, nil
}
