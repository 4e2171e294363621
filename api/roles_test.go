package api_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/stickyd/stickyd/api"
	"github.com/stickyd/stickyd/config"
	"github.com/stickyd/stickyd/store/memory"
)

// The read-only token reads everything and changes nothing: every GET
// answers as for the admin token, every other method 403.
func TestReadOnlyRole(t *testing.T) {
	const admin, read = "admin-tok", "read-tok"
	e := newEnv(t, memory.New(memory.Options{}), withToken(admin), withMetrics(),
		func(c *config.Config, o *api.Options) { o.ReadToken = read })
	want(t, e.put(t, bindingPath("mqtt", "c1"), `{"server":"n1"}`), http.StatusOK)
	sample := strings.NewReplacer(":backend", "mqtt", ":server", "n1", ":client_id", "c1")
	readHdr := http.Header{"Authorization": {"Bearer " + read}}
	writes := 0
	for _, rt := range e.api.Handler().(*echo.Echo).Routes() {
		if rt.Method == echo.RouteNotFound || !strings.HasPrefix(rt.Path, "/v1/") {
			continue
		}
		target := sample.Replace(rt.Path)
		t.Run(rt.Method+" "+rt.Path, func(t *testing.T) {
			r := e.do(t, request{method: rt.Method, target: target, noAuth: true, header: readHdr, body: `{"server":"n2"}`})
			if rt.Method == http.MethodGet {
				if r.Code != http.StatusOK && r.Code != http.StatusNotFound {
					t.Fatalf("read token: GET %s: %d %s", target, r.Code, r.Body)
				}
				if r.Code == http.StatusNotFound && !strings.Contains(rt.Path, "evacuate") && !strings.Contains(rt.Path, "rebalance") {
					t.Fatalf("read token: GET %s: 404 %s", target, r.Body)
				}
				return
			}
			writes++
			want(t, r, http.StatusForbidden, "read-only token")
		})
	}
	if writes < 8 {
		t.Fatalf("only %d write routes checked", writes)
	}
	b, err := e.store.Get(context.Background(), "mqtt", "c1")
	if err != nil || b.Server != "n1" {
		t.Fatalf("a read-only request changed c1: %+v %v", b, err)
	}
	if d, _ := e.store.Draining(context.Background(), "mqtt"); len(d) != 0 {
		t.Fatalf("a read-only request drained %v", d)
	}
	want(t, e.do(t, request{method: "GET", target: "/metrics", noAuth: true, header: readHdr}), http.StatusOK)
	want(t, e.do(t, request{method: "GET", target: "/v1/whoami", noAuth: true, header: readHdr}), http.StatusOK, `{"role":"read","can_write":false}`)
	want(t, e.do(t, request{method: "GET", target: "/v1/whoami"}), http.StatusOK, `{"role":"admin","can_write":true}`)
	want(t, e.do(t, request{method: "GET", target: "/v1/backends", noAuth: true, header: http.Header{"Authorization": {"Bearer " + read + "x"}}}), http.StatusUnauthorized)
	// The admin token still writes.
	want(t, e.put(t, bindingPath("mqtt", "c1"), `{"server":"n2"}`), http.StatusOK)

	t.Run("read token alone is refused", func(t *testing.T) {
		cfg := testConfig(t)
		cfg.APIReadToken = read
		if _, err := api.New(api.Options{Config: cfg, Store: e.store, Agent: e.agent}); err == nil {
			t.Fatal("api.New accepted a read token without an admin token")
		}
	})
}
