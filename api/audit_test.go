package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/stickyd/stickyd/internal/testenv"
	"github.com/stickyd/stickyd/store/redis"
)

type auditItem struct {
	Actor, Remote, Action, Backend, Target string
	TargetB64                              string `json:"target_b64"`
	Before, After                          json.RawMessage
}

func auditOf(t *testing.T, e *env, limit string) []auditItem {
	t.Helper()
	r := e.get(t, "/v1/audit?limit="+limit)
	want(t, r, http.StatusOK)
	var out struct{ Items []auditItem }
	if err := json.Unmarshal(r.Body, &out); err != nil {
		t.Fatal(err)
	}
	return out.Items
}

// A change made through one instance shows up in the audit trail of
// another sharing the Redis, newest first, with before and after.
func TestAuditSharedThroughRedis(t *testing.T) {
	r := testenv.StartRedis(t)
	open := func() *env {
		st, err := redis.New(context.Background(), redis.Options{URL: r.URL})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return newEnv(t, st, withToken("tok"))
	}
	a, b := open(), open()
	id := "odd/\x00%id"
	want(t, a.put(t, bindingPath("mqtt", id), `{"server":"n1"}`), http.StatusOK)
	want(t, a.put(t, bindingPath("mqtt", id), `{"server":"n2","pinned":true}`), http.StatusOK)
	want(t, a.del(t, bindingPath("mqtt", id)), http.StatusNoContent)
	want(t, a.do(t, request{method: http.MethodPut, target: "/v1/backends/mqtt/servers/n3/drain"}), http.StatusOK)
	want(t, a.do(t, request{method: http.MethodDelete, target: "/v1/backends/mqtt/servers/n3/drain"}), http.StatusOK)
	want(t, a.do(t, request{method: http.MethodDelete, target: "/v1/backends/mqtt/bindings?server=n1"}), http.StatusOK)
	want(t, a.do(t, request{method: http.MethodPost, target: "/v1/backends/mqtt/import", body: `{"client_id":"i1","server":"n1"}`}), http.StatusOK)
	// A read is not audited; a refused change neither.
	want(t, a.get(t, bindingPath("mqtt", "i1")), http.StatusOK)
	want(t, a.put(t, bindingPath("mqtt", "x"), `{"server":"n9"}`), http.StatusBadRequest)

	got := auditOf(t, b, "100")
	wantActions := []string{"import", "evict_server", "undrain", "drain", "evict", "pin", "pin"}
	if len(got) != len(wantActions) {
		t.Fatalf("instance B sees %d entries, want %d: %+v", len(got), len(wantActions), got)
	}
	for i, w := range wantActions {
		if got[i].Action != w || got[i].Actor != "admin" || got[i].Backend != "mqtt" || got[i].Remote == "" {
			t.Errorf("entry %d: %+v, want action %s by admin", i, got[i], w)
		}
	}
	pin := got[5]
	if pin.Target != strings.ToValidUTF8(id, "\uFFFD") || pin.TargetB64 != "b2RkLwAlaWQ=" {
		t.Errorf("pin target %q / %q", pin.Target, pin.TargetB64)
	}
	if !strings.Contains(string(pin.Before), `"server":"n1"`) || !strings.Contains(string(pin.After), `"server":"n2"`) || !strings.Contains(string(pin.After), `"pinned":true`) {
		t.Errorf("pin before %s after %s", pin.Before, pin.After)
	}
	if first := got[6]; string(first.Before) != "null" || !strings.Contains(string(first.After), `"server":"n1"`) {
		t.Errorf("first pin before %s after %s", first.Before, first.After)
	}
	if ev := got[4]; !strings.Contains(string(ev.Before), `"server":"n2"`) || string(ev.After) != "null" {
		t.Errorf("evict before %s after %s", ev.Before, ev.After)
	}
	if imp := got[0]; !strings.Contains(string(imp.After), `"imported":1`) {
		t.Errorf("import after %s", imp.After)
	}
	if latest := auditOf(t, b, "2"); len(latest) != 2 || latest[0].Action != "import" || latest[1].Action != "evict_server" {
		t.Errorf("limit=2: %+v", latest)
	}
	if logs := a.logs.String(); strings.Count(logs, "msg=audit") != len(wantActions) || !strings.Contains(logs, "action=pin") {
		t.Errorf("want %d audit log lines:\n%s", len(wantActions), logs)
	}
	if logs := b.logs.String(); strings.Contains(logs, "msg=audit") {
		t.Errorf("instance B logged audit lines for A's changes:\n%s", logs)
	}
}
