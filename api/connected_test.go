package api_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/stickyd/stickyd/store"
)

// A binding an agent touched as connected says so, and the backend
// counts it per server beside its bindings.
func TestConnectedShown(t *testing.T) {
	forEachStore(t, func(t *testing.T, st store.Store) {
		e := newEnv(t, st)
		ctx := context.Background()
		want(t, e.put(t, bindingPath("mqtt", "on"), `{"server":"n2","ttl_seconds":60}`), http.StatusOK)
		want(t, e.put(t, bindingPath("mqtt", "off"), `{"server":"n2","ttl_seconds":60}`), http.StatusOK)
		n, err := st.(store.Toucher).TouchConnected(ctx, "mqtt", []store.Touch{{ClientID: "on", TTL: time.Hour}, {ClientID: "gone", TTL: time.Hour}}, 10*time.Second)
		if err != nil || n != 1 {
			t.Fatalf("touch = %d, %v; want 1 (the absent id is not created)", n, err)
		}
		on := decode[binding](t, e.get(t, bindingPath("mqtt", "on")))
		if !on.Connected || on.TTLSeconds < 3590 || on.TTLSeconds > 3600 {
			t.Errorf("touched binding %+v: want connected with ttl raised to an hour", on)
		}
		if off := decode[binding](t, e.get(t, bindingPath("mqtt", "off"))); off.Connected || off.TTLSeconds > 60 {
			t.Errorf("untouched binding %+v: want not connected, ttl 60", off)
		}
		want(t, e.get(t, bindingPath("mqtt", "gone")), http.StatusNotFound)
		items := e.listAll(t, "mqtt", nil)
		conn := map[string]bool{}
		for _, b := range items {
			conn[b.ClientID] = b.Connected
		}
		if len(items) != 2 || !conn["on"] || conn["off"] {
			t.Errorf("list %+v: want on connected, off not", items)
		}
		s := decode[backend](t, e.get(t, "/v1/backends/mqtt")).Servers[1]
		if s.Bindings == nil || *s.Bindings != 2 || s.Connected == nil || *s.Connected != 1 {
			t.Errorf("n2 %+v: want 2 bindings, 1 connected", s)
		}
	})
}
