package api_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stickyd/stickyd/internal/testenv"
	"github.com/stickyd/stickyd/store"
	"github.com/stickyd/stickyd/store/redis"
)

// With Redis past maxmemory (noeviction) the API still reads bindings,
// answers writes with 507 and a JSON error, and /readyz says read-only
// while staying ready (connects are still answered).
func TestReadOnlyStore(t *testing.T) {
	r := testenv.StartRedisArgs(t, "--maxmemory-policy", "noeviction")
	st, err := redis.New(context.Background(), redis.Options{URL: r.URL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := newEnv(t, st)
	if err := st.Put(context.Background(), store.Binding{Backend: "mqtt", ClientID: "dev", Server: "n2", TTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
	// Any maxmemory below what Redis uses refuses every write that may grow it.
	if _, err := testenv.RedisDo(r.Addr, "CONFIG", "SET", "maxmemory", "1"); err != nil {
		t.Fatal(err)
	}
	want(t, e.put(t, "/v1/backends/mqtt/bindings/other", `{"server":"n1"}`), http.StatusInsufficientStorage, "store is read-only")
	want(t, e.put(t, "/v1/backends/mqtt/servers/n1/drain", ""), http.StatusInsufficientStorage, "store is read-only")
	want(t, e.get(t, "/v1/backends/mqtt/bindings/dev"), http.StatusOK, `"server":"n2"`)
	want(t, e.get(t, "/readyz"), http.StatusOK, `"status":"read_only"`)
	want(t, e.get(t, "/v1/readyz"), http.StatusOK, `"status":"read_only"`, "refuses writes")
	if !strings.Contains(e.logs.String(), "store is read-only") {
		t.Errorf("no warning logged: %s", e.logs.String())
	}
	if _, err := testenv.RedisDo(r.Addr, "CONFIG", "SET", "maxmemory", "0"); err != nil {
		t.Fatal(err)
	}
	want(t, e.get(t, "/readyz"), http.StatusOK, `"status":"ok"`)
	want(t, e.put(t, "/v1/backends/mqtt/bindings/other", `{"server":"n1"}`), http.StatusOK, fmt.Sprintf(`"server":%q`, "n1"))
}
