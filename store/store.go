// Package store remembers which server each client is bound to.
//
// A binding maps (backend, client id) to a server name, with an optional TTL
// and a pinned flag. Implementations live in sub-packages (memory, redis) and
// pass one contract suite (storetest).
package store

import (
	"context"
	"errors"
	"time"
)

// Sentinel errors callers branch on.
var (
	// ErrNotFound means there is no live binding for the client.
	ErrNotFound = errors.New("binding not found")
	// ErrBadCursor means a List cursor was not produced by this store.
	ErrBadCursor = errors.New("invalid cursor")
	// ErrReadOnly means the store refuses writes (Redis at maxmemory with
	// noeviction, or a read-only replica): reads still work.
	ErrReadOnly = errors.New("store is read-only: it refuses writes")
)

// MaxClientIDLen is the longest client id MQTT can carry (a two-byte length).
const MaxClientIDLen = 65535

// Binding is one entry of the sticky map. ClientID holds arbitrary bytes.
type Binding struct {
	Backend  string
	ClientID string
	Server   string
	// TTL is the remaining lifetime; 0 means the binding never expires.
	TTL    time.Duration
	Pinned bool
	// Connected is true while an agent reports the client connected
	// through its HAProxy (Toucher): the binding then does not expire.
	Connected bool
}

// Claim is the binding in force after GetOrClaim or Move.
type Claim struct {
	Server string
	Pinned bool
	// Claimed is true when this call created the binding (or, for Move,
	// changed it); false when an existing binding was returned as is.
	Claimed bool
	// NotStored is true when there was no binding and none was made because
	// the backend holds its maximum of bindings (Options.MaxBindings of the
	// store): Server is then the proposed one, for this connection only.
	NotStored bool
}

// ListOptions filters and pages List. Zero values mean "no filter".
type ListOptions struct {
	Server string // only bindings to this server
	Prefix string // only client ids starting with these bytes
	Cursor string // opaque, from a previous Page.NextCursor; "" starts over
	Limit  int    // page size; <= 0 means DefaultListLimit
}

// DefaultListLimit is the page size when ListOptions.Limit is not set.
const DefaultListLimit = 100

// MaxListLimit bounds a page so one request cannot ask for the whole map.
const MaxListLimit = 1000

// Page is one page of List. An empty NextCursor means the end.
type Page struct {
	Items      []Binding
	NextCursor string
}

// Store is the sticky map. Every method is safe for concurrent use.
type Store interface {
	// GetOrClaim returns the existing binding, or binds the client to
	// proposed when there is none. It is atomic across every agent sharing
	// the store: the first writer wins. An existing unpinned binding that
	// expires has its TTL reset to ttl; pinned bindings and bindings without
	// expiry keep theirs. ttl <= 0 stores a binding that never expires.
	// On Redis it costs one round trip.
	GetOrClaim(ctx context.Context, backend, clientID, proposed string, ttl time.Duration) (Claim, error)

	// Move rebinds the client from `from` to `to` only if it is still bound
	// to `from` and not pinned (compare-and-swap); with no binding it binds
	// to `to`. It returns the binding in force afterwards, so a caller that
	// lost a race learns the winner's choice.
	Move(ctx context.Context, backend, clientID, from, to string, ttl time.Duration) (Claim, error)

	// Get returns the binding or ErrNotFound.
	Get(ctx context.Context, backend, clientID string) (Binding, error)
	// Put creates or replaces a binding (b.TTL 0 = no expiry).
	Put(ctx context.Context, b Binding) error
	// Delete removes a binding, or returns ErrNotFound.
	Delete(ctx context.Context, backend, clientID string) error

	// List pages through a backend's bindings. Each call does bounded work:
	// a page may hold fewer than Limit items while NextCursor is not empty.
	List(ctx context.Context, backend string, opts ListOptions) (Page, error)
	// CountByServer counts live bindings per server of a backend.
	CountByServer(ctx context.Context, backend string) (map[string]int, error)
	// DeleteByServer removes every binding of one server and says how many.
	DeleteByServer(ctx context.Context, backend, server string) (int, error)

	// SetDraining marks a server as draining (no new clients) or not.
	SetDraining(ctx context.Context, backend, server string, draining bool) error
	// Draining returns the servers of a backend that are draining.
	Draining(ctx context.Context, backend string) (map[string]bool, error)

	// AppendAudit records one administrative change; the store keeps the
	// latest MaxAuditEntries, shared by every agent (audit.go).
	AppendAudit(ctx context.Context, e AuditEntry) error
	// Audit returns up to limit entries, newest first.
	Audit(ctx context.Context, limit int) ([]AuditEntry, error)

	// Ping reports whether the store answers.
	Ping(ctx context.Context) error
	Close() error

	// Inline returns the store's in-memory path for the connect path, or
	// nil when it has none. Declared here, not discovered, so a wrapper
	// (metrics) has to pass it on and cannot switch it off unnoticed.
	Inline() Inline
	// Stats returns a snapshot of the store's own counters.
	Stats() Stats
}

// Inline answers the connect path from process memory, without I/O: the
// memory store always can, the Redis store when its local cache holds the
// binding. A false ok means the call did nothing and the Store method must
// be used instead. clientID may alias a network buffer: it is not kept.
type Inline interface {
	TryGetOrClaim(backend string, clientID []byte, proposed string, ttl time.Duration) (Claim, bool)
	TryMove(backend string, clientID []byte, from, to string, ttl time.Duration) (Claim, bool)
}

// Stats is a snapshot of a store's own counters.
type Stats struct {
	// Cache is set when the store keeps a local cache of a shared map.
	Cache *CacheStats
	// ReadOnly is true while the store refuses writes (see ErrReadOnly):
	// set by the last write that was refused, cleared by one that succeeds.
	ReadOnly bool
}

// CacheStats counts what a local cache did since start.
type CacheStats struct {
	Hits, Misses  uint64
	Invalidations uint64 // invalidations received (any store's change, this one's included)
	Refreshes     uint64 // refresh scripts run
	RefreshErrors uint64
	Resets        uint64 // times the cache was emptied: subscription lost or (re)made
	Enabled       bool   // the subscription is up and the cache answers
	Entries       int
}
