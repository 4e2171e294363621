package store

import "time"

// MaxAuditEntries bounds the audit trail a store keeps.
const MaxAuditEntries = 10000

// AuditEntry is one administrative change: who did what to which target,
// and the state before and after (JSON text, "" when there was none).
type AuditEntry struct {
	Time    time.Time `json:"time"`
	Actor   string    `json:"actor"`  // the token's role: admin, read, open
	Remote  string    `json:"remote"` // the caller's address
	Action  string    `json:"action"` // pin, evict, evict_server, drain, undrain, evacuate, import, rebalance, ...
	Backend string    `json:"backend"`
	Target  string    `json:"target"` // client id (bytes) or server name
	Before  string    `json:"before,omitempty"`
	After   string    `json:"after,omitempty"`
}
