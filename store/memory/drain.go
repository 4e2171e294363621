package memory

import (
	"context"
)

// SetDraining implements store.Store.
func (s *Store) SetDraining(ctx context.Context, backendName, server string, draining bool) error {
	b := s.backendOrCreate(backendName)
	b.mu.Lock()
	if draining {
		b.draining[server] = true
	} else {
		delete(b.draining, server)
	}
	b.mu.Unlock()
	return nil
}

// Draining implements store.Store.
func (s *Store) Draining(ctx context.Context, backendName string) (map[string]bool, error) {
	out := make(map[string]bool)
	b := s.backend(backendName)
	if b == nil {
		return out, nil
	}
	b.mu.RLock()
	for k := range b.draining {
		out[k] = true
	}
	b.mu.RUnlock()
	return out, nil
}

// Len returns the number of entries held for a backend, expired ones not yet
// swept included. For tests and metrics.
func (s *Store) Len(backendName string) int {
	b := s.backend(backendName)
	if b == nil {
		return 0
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.tree.Len()
}
