package store

import (
	"context"
	"time"
)

// Touch is one connected client whose binding a refresh keeps alive.
type Touch struct {
	ClientID string
	// TTL is the binding's TTL (the larger of ttl and the session expiry):
	// the binding's expiry becomes at least now+TTL.
	TTL time.Duration
}

// Toucher is a store that keeps the bindings of connected clients alive.
// Both stores implement it; a wrapper passes it on.
type Toucher interface {
	// TouchConnected re-arms the expiry of each existing live binding to at
	// least now+TTL (a binding that never expires keeps none) and marks it
	// connected for the next `connected` (Binding.Connected). It never
	// creates a binding: one evicted meanwhile stays evicted. It returns
	// how many bindings it found.
	TouchConnected(ctx context.Context, backend string, touches []Touch, connected time.Duration) (int, error)
}

// ConnectedCounter counts, per server, live bindings and those marked
// connected, in one walk.
type ConnectedCounter interface {
	CountConnected(ctx context.Context, backend string) (bindings, connected map[string]int, err error)
}
