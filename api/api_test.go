package api_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

	"github.com/stickyd/stickyd/agent"
	"github.com/stickyd/stickyd/api"
	"github.com/stickyd/stickyd/config"
	"github.com/stickyd/stickyd/internal/testenv"
	"github.com/stickyd/stickyd/store"
	"github.com/stickyd/stickyd/store/memory"
)

// checkBinding checks a binding object names id byte for byte.
func checkBinding(t *testing.T, b binding, id, server string) {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(b.ClientIDB64)
	if err != nil {
		t.Fatalf("client_id_b64 %q: %v", b.ClientIDB64, err)
	}
	if string(raw) != id {
		t.Errorf("client_id_b64 decodes to %d bytes %q, want %d bytes", len(raw), trunc(raw), len(id))
	}
	if utf8.ValidString(id) && b.ClientID != id {
		t.Errorf("client_id %q, want %q", trunc([]byte(b.ClientID)), trunc([]byte(id)))
	}
	if !utf8.ValidString(b.ClientID) {
		t.Errorf("client_id is not valid UTF-8")
	}
	if b.Server != server {
		t.Errorf("server %q, want %q", b.Server, server)
	}
}

func TestClientIDRoundTrip(t *testing.T) {
	long := make([]byte, store.MaxClientIDLen)
	for i := range long {
		long[i] = byte(i * 7) // every byte value: NUL, '/', '%', '?', invalid UTF-8
	}
	ids := []struct{ name, id string }{
		{"slash", "a/b"},
		{"escaped slash", "a%2Fb"},
		{"space", "with space"},
		{"unicode", "ünïcödé"},
		{"binary", "\x00\xff binary"},
		{"percent", "100%"},
		{"plus", "a+b"},
		{"dot", "."},
		{"dot dot", ".."},
		{"query characters", "a?b#c&d=e;f"},
		{"max length", string(long)},
	}
	forEachStore(t, func(t *testing.T, st store.Store) {
		e := newEnv(t, st)
		ctx := context.Background()
		for _, tc := range ids {
			t.Run(tc.name, func(t *testing.T) {
				p := bindingPath("mqtt", tc.id)
				r := e.put(t, p, `{"server":"n2","pinned":true}`)
				want(t, r, http.StatusOK)
				checkBinding(t, decode[binding](t, r), tc.id, "n2")

				r = e.get(t, p)
				want(t, r, http.StatusOK)
				checkBinding(t, decode[binding](t, r), tc.id, "n2")
				if b, err := st.Get(ctx, "mqtt", tc.id); err != nil || b.Server != "n2" || !b.Pinned {
					t.Fatalf("store has %+v, %v", b, err)
				}

				found := 0
				for _, it := range e.listAll(t, "mqtt", url.Values{"prefix": {tc.id}, "limit": {"1000"}}) {
					if raw, _ := base64.StdEncoding.DecodeString(it.ClientIDB64); string(raw) == tc.id {
						checkBinding(t, it, tc.id, "n2")
						found++
					}
				}
				if found != 1 {
					t.Errorf("listed %d times, want once", found)
				}

				want(t, e.del(t, p), http.StatusNoContent)
				want(t, e.get(t, p), http.StatusNotFound)
				if _, err := st.Get(ctx, "mqtt", tc.id); !errors.Is(err, store.ErrNotFound) {
					t.Fatalf("store still has it: %v", err)
				}
			})
		}

		t.Run("a/b and a%2Fb are different ids", func(t *testing.T) {
			want(t, e.put(t, bindingPath("mqtt", "a/b"), `{"server":"n1"}`), http.StatusOK)
			want(t, e.put(t, bindingPath("mqtt", "a%2Fb"), `{"server":"n3"}`), http.StatusOK)
			checkBinding(t, decode[binding](t, e.get(t, "/v1/backends/mqtt/bindings/a%2Fb")), "a/b", "n1")
			checkBinding(t, decode[binding](t, e.get(t, "/v1/backends/mqtt/bindings/a%2fb")), "a/b", "n1") // lower-case hex
			checkBinding(t, decode[binding](t, e.get(t, "/v1/backends/mqtt/bindings/a%252Fb")), "a%2Fb", "n3")
			// An unescaped slash is another path, not the id "a/b".
			want(t, e.get(t, "/v1/backends/mqtt/bindings/a/b"), http.StatusNotFound, "%2F")
			want(t, e.put(t, "/v1/backends/mqtt/bindings/x/y", `{"server":"n1"}`), http.StatusNotFound)
			want(t, e.del(t, "/v1/backends/mqtt/bindings/a/b"), http.StatusNotFound)
			checkBinding(t, decode[binding](t, e.get(t, "/v1/backends/mqtt/bindings/a%2Fb")), "a/b", "n1")
		})
		t.Run("unescaped UTF-8 in the path", func(t *testing.T) {
			want(t, e.put(t, bindingPath("mqtt", "ünïcödé"), `{"server":"n1"}`), http.StatusOK)
			checkBinding(t, decode[binding](t, e.get(t, "/v1/backends/mqtt/bindings/ünïcödé")), "ünïcödé", "n1")
		})
		t.Run("empty id is not addressable", func(t *testing.T) {
			for _, m := range []string{http.MethodGet, http.MethodPut, http.MethodDelete} {
				r := e.do(t, request{method: m, target: "/v1/backends/mqtt/bindings/", body: `{"server":"n1"}`})
				if r.Code != http.StatusBadRequest && r.Code != http.StatusNotFound {
					t.Errorf("%s: status %d, want 400 or 404", m, r.Code)
				}
			}
			if _, err := st.Get(ctx, "mqtt", ""); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("store has an empty id: %v", err)
			}
		})
		t.Run("too long", func(t *testing.T) {
			id := strings.Repeat("x", store.MaxClientIDLen+1)
			want(t, e.put(t, bindingPath("mqtt", id), `{"server":"n1"}`), http.StatusBadRequest, "65536 bytes", "65535")
			want(t, e.get(t, bindingPath("mqtt", id)), http.StatusBadRequest, "at most 65535")
		})
	})
}

func TestPutBinding(t *testing.T) {
	forEachStore(t, func(t *testing.T, st store.Store) {
		e := newEnv(t, st)
		ctx := context.Background()
		p := bindingPath("mqtt", "dev-1")

		t.Run("defaults", func(t *testing.T) {
			r := e.put(t, p, `{"server":"n1"}`)
			want(t, r, http.StatusOK)
			b := decode[binding](t, r)
			if b.TTLSeconds != 600 || b.Pinned {
				t.Errorf("got %+v, want the configured ttl (600 s) and not pinned", b)
			}
			got := decode[binding](t, e.get(t, p))
			if got.TTLSeconds < 595 || got.TTLSeconds > 600 {
				t.Errorf("GET ttl_seconds %d, want about 600", got.TTLSeconds)
			}
		})
		t.Run("no expiry", func(t *testing.T) {
			r := e.put(t, p, `{"server":"n2","ttl_seconds":0}`)
			want(t, r, http.StatusOK)
			if b := decode[binding](t, r); b.TTLSeconds != 0 {
				t.Errorf("ttl_seconds %d, want 0", b.TTLSeconds)
			}
			if b, err := st.Get(ctx, "mqtt", "dev-1"); err != nil || b.TTL != 0 || b.Server != "n2" {
				t.Errorf("store has %+v, %v; want n2 without expiry", b, err)
			}
			if b := decode[binding](t, e.get(t, p)); b.TTLSeconds != 0 {
				t.Errorf("GET ttl_seconds %d, want 0", b.TTLSeconds)
			}
		})
		t.Run("longest ttl", func(t *testing.T) {
			want(t, e.put(t, p, `{"server":"n2","ttl_seconds":315360000}`), http.StatusOK)
		})
		t.Run("pinned with ttl", func(t *testing.T) {
			r := e.put(t, p, `{"server":"n3","ttl_seconds":3600,"pinned":true}`)
			want(t, r, http.StatusOK)
			b := decode[binding](t, r)
			if b.Server != "n3" || b.TTLSeconds != 3600 || !b.Pinned {
				t.Errorf("got %+v", b)
			}
		})

		// Each bad request answers an error naming the problem and leaves
		// the binding set above exactly as it was.
		big := `{"server":"` + strings.Repeat("x", 70000) + `"}`
		bad := []struct {
			name, body string
			code       int
			mention    []string
		}{
			{"unknown server", `{"server":"n9"}`, 400, []string{`"n9"`, "n1, n2, n3"}},
			{"server of another backend", `{"server":"u1"}`, 400, []string{`"u1"`}},
			{"server missing", `{"ttl_seconds":5}`, 400, []string{"server"}},
			{"server empty", `{"server":""}`, 400, []string{"server"}},
			{"server not a string", `{"server":5}`, 400, []string{"server", "string"}},
			{"negative ttl", `{"server":"n2","ttl_seconds":-1}`, 400, []string{"ttl_seconds"}},
			{"ttl over 10 years", `{"server":"n2","ttl_seconds":315360001}`, 400, []string{"ttl_seconds", "315360000"}},
			{"ttl as string", `{"server":"n2","ttl_seconds":"600"}`, 400, []string{"ttl_seconds", "integer"}},
			{"ttl fraction", `{"server":"n2","ttl_seconds":1.5}`, 400, []string{"ttl_seconds"}},
			{"ttl overflows", `{"server":"n2","ttl_seconds":1e30}`, 400, []string{"ttl_seconds"}},
			{"pinned not a bool", `{"server":"n2","pinned":"yes"}`, 400, []string{"pinned", "boolean"}},
			{"unknown field", `{"server":"n2","ttl":5}`, 400, []string{`"ttl"`}},
			{"truncated JSON", `{"server":`, 400, []string{"JSON"}},
			{"not JSON", `{server:"n2"}`, 400, []string{"JSON"}},
			{"two objects", `{"server":"n2"}{"server":"n1"}`, 400, []string{"single"}},
			{"array", `[{"server":"n2"}]`, 400, []string{"object"}},
			{"string", `"n2"`, 400, []string{"object"}},
			{"empty body", ``, 400, []string{"empty"}},
			{"too large", big, 413, []string{"65536"}},
			{"too large after a valid object", `{"server":"n2"}` + strings.Repeat(" ", 70000), 413, []string{"65536"}},
		}
		for _, tc := range bad {
			t.Run(tc.name, func(t *testing.T) {
				want(t, e.put(t, p, tc.body), tc.code, tc.mention...)
				b, err := st.Get(ctx, "mqtt", "dev-1")
				if err != nil || b.Server != "n3" || !b.Pinned || b.TTL < 3500*time.Second {
					t.Errorf("binding changed to %+v, %v", b, err)
				}
			})
		}
		t.Run("unknown backend", func(t *testing.T) {
			want(t, e.put(t, bindingPath("nope", "dev-1"), `{"server":"n1"}`), http.StatusNotFound, `unknown backend "nope"`)
		})
		t.Run("username backend", func(t *testing.T) {
			want(t, e.put(t, bindingPath("users", "alice"), `{"server":"u1"}`), http.StatusOK)
			want(t, e.put(t, bindingPath("users", "alice"), `{"server":"n1"}`), http.StatusBadRequest, `"n1"`, "u1")
		})
	})
}

func TestGetDeleteBinding(t *testing.T) {
	forEachStore(t, func(t *testing.T, st store.Store) {
		e := newEnv(t, st)
		p := bindingPath("mqtt", "c1")
		want(t, e.get(t, p), http.StatusNotFound, `"c1"`, `"mqtt"`)
		want(t, e.del(t, p), http.StatusNotFound, `"c1"`)
		want(t, e.put(t, p, `{"server":"n1","ttl_seconds":30}`), http.StatusOK)
		b := decode[binding](t, e.get(t, p))
		if b.TTLSeconds < 25 || b.TTLSeconds > 30 || b.Pinned {
			t.Errorf("got %+v", b)
		}
		want(t, e.del(t, p), http.StatusNoContent)
		want(t, e.del(t, p), http.StatusNotFound)
		want(t, e.get(t, bindingPath("nope", "c1")), http.StatusNotFound, `unknown backend "nope"`)
		want(t, e.del(t, bindingPath("nope", "c1")), http.StatusNotFound, `unknown backend "nope"`)
	})
}

func TestListBindings(t *testing.T) {
	forEachStore(t, func(t *testing.T, st store.Store) {
		e := newEnv(t, st)
		base := "/v1/backends/mqtt/bindings"

		r := e.get(t, base)
		want(t, r, http.StatusOK)
		if string(bytes.TrimSpace(r.Body)) != `{"items":[],"next_cursor":""}` {
			t.Errorf("empty listing: %s", r.Body)
		}

		servers := []string{"n1", "n2", "n3"}
		wantServer := map[string]string{}
		for i := range 120 {
			id := fmt.Sprintf("dev-%03d", i)
			body := fmt.Sprintf(`{"server":%q,"ttl_seconds":%d,"pinned":%v}`, servers[i%3], (i%2)*600, i%5 == 0)
			want(t, e.put(t, bindingPath("mqtt", id), body), http.StatusOK)
			wantServer[id] = servers[i%3]
		}
		for i := range 5 {
			id := fmt.Sprintf("other-%d", i)
			want(t, e.put(t, bindingPath("mqtt", id), `{"server":"n1"}`), http.StatusOK)
			wantServer[id] = "n1"
		}

		check := func(t *testing.T, q url.Values, match func(id string) bool) {
			t.Helper()
			seen := map[string]bool{}
			for _, it := range e.listAll(t, "mqtt", q) {
				if seen[it.ClientID] {
					t.Errorf("%q listed twice", it.ClientID)
				}
				seen[it.ClientID] = true
				if wantServer[it.ClientID] != it.Server {
					t.Errorf("%q on %q, want %q", it.ClientID, it.Server, wantServer[it.ClientID])
				}
				var n int
				fmt.Sscanf(it.ClientID, "dev-%d", &n)
				if strings.HasPrefix(it.ClientID, "dev-") {
					if ttl := it.TTLSeconds; (n%2 == 0 && ttl != 0) || (n%2 == 1 && (ttl < 590 || ttl > 600)) {
						t.Errorf("%q: ttl_seconds %d", it.ClientID, ttl)
					}
					if it.Pinned != (n%5 == 0) {
						t.Errorf("%q: pinned %v", it.ClientID, it.Pinned)
					}
				}
			}
			for id := range wantServer {
				if match(id) != seen[id] {
					t.Errorf("%q listed: %v, want %v", id, seen[id], match(id))
				}
			}
		}
		t.Run("all, small pages", func(t *testing.T) {
			check(t, url.Values{"limit": {"7"}}, func(string) bool { return true })
		})
		t.Run("all, default page", func(t *testing.T) {
			check(t, nil, func(string) bool { return true })
		})
		t.Run("server", func(t *testing.T) {
			check(t, url.Values{"server": {"n1"}, "limit": {"9"}}, func(id string) bool { return wantServer[id] == "n1" })
		})
		t.Run("prefix", func(t *testing.T) {
			check(t, url.Values{"prefix": {"dev-01"}}, func(id string) bool { return strings.HasPrefix(id, "dev-01") })
		})
		t.Run("server and prefix", func(t *testing.T) {
			check(t, url.Values{"prefix": {"dev-"}, "server": {"n2"}, "limit": {"4"}}, func(id string) bool {
				return strings.HasPrefix(id, "dev-") && wantServer[id] == "n2"
			})
		})

		bad := []struct {
			query   string
			code    int
			mention []string
		}{
			{"limit=0", 400, []string{"limit", "1000"}},
			{"limit=1001", 400, []string{"limit"}},
			{"limit=-1", 400, []string{"limit"}},
			{"limit=ten", 400, []string{"limit", `"ten"`}},
			{"server=n9", 400, []string{`"n9"`, "n1, n2, n3"}},
			{"cursor=not-a-cursor", 400, []string{"cursor"}},
			{"cursor=!!", 400, []string{"cursor"}},
			{"cursor=" + url.QueryEscape(base64.StdEncoding.EncodeToString([]byte("not a cursor"))), 400, []string{"cursor"}},
			{"foo=1", 400, []string{`"foo"`}},
			{"server=n1&server=n2", 400, []string{`"server"`}},
			{"prefix=%zz", 400, []string{"query"}},
		}
		for _, tc := range bad {
			t.Run(tc.query, func(t *testing.T) {
				want(t, e.get(t, base+"?"+tc.query), tc.code, tc.mention...)
			})
		}
		want(t, e.get(t, "/v1/backends/nope/bindings"), http.StatusNotFound, `unknown backend "nope"`)
	})
}

func TestDeleteByServer(t *testing.T) {
	forEachStore(t, func(t *testing.T, st store.Store) {
		e := newEnv(t, st)
		for i := range 8 {
			srv := "n1"
			if i >= 5 {
				srv = "n2"
			}
			want(t, e.put(t, bindingPath("mqtt", fmt.Sprintf("c%d", i)), fmt.Sprintf(`{"server":%q}`, srv)), http.StatusOK)
		}
		count := func() int { return len(e.listAll(t, "mqtt", nil)) }

		for _, q := range []string{"", "?server=", "?servr=n1", "?server=n9", "?server=n1&prefix=c1", "?server=n1&server=n2"} {
			t.Run("rejects "+q, func(t *testing.T) {
				want(t, e.del(t, "/v1/backends/mqtt/bindings"+q), http.StatusBadRequest)
				if n := count(); n != 8 {
					t.Fatalf("%d bindings left, want all 8", n)
				}
			})
		}
		want(t, e.del(t, "/v1/backends/nope/bindings?server=n1"), http.StatusNotFound, `unknown backend "nope"`)

		r := e.del(t, "/v1/backends/mqtt/bindings?server=n1")
		want(t, r, http.StatusOK)
		if string(bytes.TrimSpace(r.Body)) != `{"deleted":5}` {
			t.Errorf("body %s, want {\"deleted\":5}", r.Body)
		}
		for _, it := range e.listAll(t, "mqtt", nil) {
			if it.Server != "n2" {
				t.Errorf("%q on %s survived", it.ClientID, it.Server)
			}
		}
		if n := count(); n != 3 {
			t.Errorf("%d bindings left, want 3", n)
		}
		// Counts show at once through this API (no stale cache).
		srvs := decode[backend](t, e.get(t, "/v1/backends/mqtt")).Servers
		if *srvs[0].Bindings != 0 || *srvs[1].Bindings != 3 {
			t.Errorf("counts n1=%d n2=%d, want 0 and 3", *srvs[0].Bindings, *srvs[1].Bindings)
		}
		r = e.del(t, "/v1/backends/mqtt/bindings?server=n1")
		want(t, r, http.StatusOK)
		if string(bytes.TrimSpace(r.Body)) != `{"deleted":0}` {
			t.Errorf("body %s, want {\"deleted\":0}", r.Body)
		}
	})
}

// allUp reports every server of the mqtt test backend as up.
func allUp(id string) *agent.Query {
	q := &agent.Query{Backend: "mqtt", ClientID: []byte(id)}
	for i := range 3 {
		q.SetUp(i, true)
	}
	return q
}

func TestBackends(t *testing.T) {
	forEachStore(t, func(t *testing.T, st store.Store) {
		e := newEnv(t, st)
		ctx := context.Background()

		r := e.get(t, "/v1/backends")
		want(t, r, http.StatusOK)
		list := decode[struct {
			Backends []backend `json:"backends"`
		}](t, r).Backends
		zero := 0
		wantMQTT := backend{Name: "mqtt", Key: "client_id", Servers: []server{
			{Name: "n1", Address: "10.0.0.1:1883", Weight: 1, Up: true, Bindings: &zero, Connected: &zero},
			{Name: "n2", Address: "10.0.0.2:1883", Weight: 1, Up: true, Bindings: &zero, Connected: &zero},
			{Name: "n3", Address: "10.0.0.3:1883", Weight: 2, Up: true, Bindings: &zero, Connected: &zero},
		}}
		if len(list) != 2 || !equalBackend(list[0], wantMQTT) || list[1].Name != "users" || list[1].Key != "username" {
			t.Fatalf("backends %+v", list)
		}

		// Writes through the API show at once.
		want(t, e.put(t, bindingPath("mqtt", "a"), `{"server":"n2"}`), http.StatusOK)
		want(t, e.put(t, bindingPath("mqtt", "b"), `{"server":"n2"}`), http.StatusOK)
		// HAProxy reports n1 down through a connection.
		q := allUp("c")
		q.SetUp(0, false)
		if d := e.agent.Decide(ctx, q); d.Server == "" || d.Server == "n1" {
			t.Fatalf("decision %+v", d)
		}
		got := decode[backend](t, e.get(t, "/v1/backends/mqtt"))
		if s := got.Servers[0]; s.Up || !s.Reported {
			t.Errorf("n1 %+v, want reported down", s)
		}
		if s := got.Servers[1]; *s.Bindings < 2 || !s.Up || !s.Reported {
			t.Errorf("n2 %+v, want up with at least 2 bindings", s)
		}
		// Bindings the agent makes show within the cache period.
		total := func() int {
			n := 0
			for _, s := range decode[backend](t, e.get(t, "/v1/backends/mqtt")).Servers {
				n += *s.Bindings
			}
			return n
		}
		before := total()
		for i := range 10 {
			e.agent.Decide(ctx, allUp(fmt.Sprintf("new-%d", i)))
		}
		testenv.Eventually(t, 5*time.Second, func() error {
			if n := total(); n != before+10 {
				return fmt.Errorf("%d bindings counted, want %d", n, before+10)
			}
			return nil
		})

		srvs := decode[struct {
			Servers []server `json:"servers"`
		}](t, e.get(t, "/v1/backends/mqtt/servers")).Servers
		if len(srvs) != 3 || srvs[2].Name != "n3" || srvs[2].Weight != 2 {
			t.Errorf("servers %+v", srvs)
		}
		if s := decode[server](t, e.get(t, "/v1/backends/mqtt/servers/n3")); s.Name != "n3" || s.Address != "10.0.0.3:1883" {
			t.Errorf("n3 %+v", s)
		}
		want(t, e.get(t, "/v1/backends/mqtt/servers/n9"), http.StatusNotFound, `"n9"`)
		want(t, e.get(t, "/v1/backends/nope"), http.StatusNotFound, `unknown backend "nope"`)
		want(t, e.get(t, "/v1/backends/nope/servers"), http.StatusNotFound, `unknown backend "nope"`)
	})
}

func equalBackend(a, b backend) bool {
	if a.Name != b.Name || a.Key != b.Key || len(a.Servers) != len(b.Servers) {
		return false
	}
	for i := range a.Servers {
		x, y := a.Servers[i], b.Servers[i]
		if x.Bindings == nil || y.Bindings == nil || *x.Bindings != *y.Bindings {
			return false
		}
		if (x.Connected == nil) != (y.Connected == nil) || x.Connected != nil && *x.Connected != *y.Connected {
			return false
		}
		x.Bindings, y.Bindings, x.Connected, y.Connected = nil, nil, nil, nil
		if x != y {
			return false
		}
	}
	return true
}

func TestDrain(t *testing.T) {
	forEachStore(t, func(t *testing.T, st store.Store) {
		e := newEnv(t, st)
		ctx := context.Background()
		drain := "/v1/backends/mqtt/servers/n1/drain"

		// A client bound to n1 before the drain.
		want(t, e.put(t, bindingPath("mqtt", "old"), `{"server":"n1"}`), http.StatusOK)

		r := e.put(t, drain, "")
		want(t, r, http.StatusOK)
		if s := decode[server](t, r); s.Name != "n1" || !s.Draining || s.Bindings == nil || *s.Bindings != 1 {
			t.Errorf("drain answered %+v", s)
		}
		want(t, e.put(t, drain, ""), http.StatusOK) // idempotent
		if s := decode[server](t, e.get(t, "/v1/backends/mqtt/servers/n1")); !s.Draining {
			t.Error("GET server does not show draining")
		}
		if d, err := st.Draining(ctx, "mqtt"); err != nil || !d["n1"] {
			t.Errorf("store draining %v, %v", d, err)
		}

		// This agent obeys at once, another sharing the store after its
		// next refresh; the existing binding stays.
		other, err := agent.New(e.cfg, st, e.log, agent.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := other.RefreshDraining(ctx); err != nil {
			t.Fatal(err)
		}
		for _, a := range []*agent.Agent{e.agent, other} {
			for i := range 200 {
				id := fmt.Sprintf("drained-%p-%d", a, i)
				if s := a.Backend("mqtt").Place([]byte(id)); s == "n1" {
					t.Fatalf("Place(%q) = n1 while draining", id)
				}
				if d := a.Decide(ctx, allUp(id)); d.Server == "n1" || d.Outcome != agent.OutcomePlaced {
					t.Fatalf("new client %q: %+v while n1 drains", id, d)
				}
			}
			if d := a.Decide(ctx, allUp("old")); d.Server != "n1" || d.Outcome != agent.OutcomeExisting {
				t.Errorf("existing client: %+v, want n1 kept", d)
			}
		}

		r = e.del(t, drain)
		want(t, r, http.StatusOK)
		if s := decode[server](t, r); s.Draining {
			t.Errorf("undrain answered %+v", s)
		}
		want(t, e.del(t, drain), http.StatusOK) // idempotent
		onN1 := 0
		for i := range 200 {
			if d := e.agent.Decide(ctx, allUp(fmt.Sprintf("after-%d", i))); d.Server == "n1" {
				onN1++
			}
		}
		if onN1 == 0 {
			t.Error("no new client reached n1 after the drain ended")
		}

		want(t, e.put(t, "/v1/backends/mqtt/servers/n9/drain", ""), http.StatusNotFound, `"n9"`, "n1, n2, n3")
		want(t, e.del(t, "/v1/backends/mqtt/servers/n9/drain"), http.StatusNotFound, `"n9"`)
		want(t, e.put(t, "/v1/backends/nope/servers/n1/drain", ""), http.StatusNotFound, `unknown backend "nope"`)
		if d, _ := st.Draining(ctx, "mqtt"); len(d) != 0 {
			t.Errorf("draining %v after undrain and failed requests", d)
		}
	})
}

// TestConcurrent mixes writes, listings and counts, for the race detector.
func TestConcurrent(t *testing.T) {
	forEachStore(t, func(t *testing.T, st store.Store) {
		e := newEnv(t, st)
		want(t, e.get(t, "/v1/backends"), http.StatusOK)
		// Only t.Errorf off the test goroutine.
		expect := func(r response, code int) {
			if r.Code != code {
				t.Errorf("status %d, want %d: %s", r.Code, code, trunc(r.Body))
			}
		}
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Go(func() {
				for i := range 25 {
					p := bindingPath("mqtt", fmt.Sprintf("g%d-%d", g, i))
					expect(e.put(t, p, `{"server":"n2"}`), http.StatusOK)
					expect(e.get(t, "/v1/backends"), http.StatusOK)
					expect(e.get(t, "/v1/backends/mqtt/bindings?limit=5"), http.StatusOK)
					if i%2 == 0 {
						expect(e.del(t, p), http.StatusNoContent)
					}
					if i%10 == 0 {
						expect(e.put(t, "/v1/backends/mqtt/servers/n3/drain", ""), http.StatusOK)
						expect(e.del(t, "/v1/backends/mqtt/servers/n3/drain"), http.StatusOK)
					}
				}
			})
		}
		wg.Wait()
		if n := len(e.listAll(t, "mqtt", nil)); n != 8*12 {
			t.Errorf("%d bindings, want %d", n, 8*12)
		}
		if n := *decode[backend](t, e.get(t, "/v1/backends/mqtt")).Servers[1].Bindings; n != 8*12 {
			t.Errorf("n2 counts %d bindings, want %d", n, 8*12)
		}
	})
}

func TestPlacement(t *testing.T) {
	e := newEnv(t, memory.New(memory.Options{}))
	r := e.get(t, "/v1/backends/mqtt/placement/"+url.PathEscape("a/b"))
	want(t, r, http.StatusOK)
	p := decode[struct {
		ClientID    string `json:"client_id"`
		ClientIDB64 string `json:"client_id_b64"`
		Server      string `json:"server"`
	}](t, r)
	if p.ClientID != "a/b" || p.Server != e.agent.Backend("mqtt").Place([]byte("a/b")) {
		t.Errorf("placement %+v", p)
	}
}

func TestAuth(t *testing.T) {
	const tok = "s3cret-token"
	e := newEnv(t, memory.New(memory.Options{}), withToken(tok))
	want(t, e.put(t, bindingPath("mqtt", "c1"), `{"server":"n1"}`), http.StatusOK)

	// Every /v1 route refuses a request without the right token.
	sample := strings.NewReplacer(":backend", "mqtt", ":server", "n1", ":client_id", "c1")
	for _, rt := range e.api.Handler().(*echo.Echo).Routes() {
		if rt.Method == echo.RouteNotFound || !strings.HasPrefix(rt.Path, "/v1/") {
			continue
		}
		target := sample.Replace(rt.Path)
		for _, auth := range []string{"", "Bearer", "Bearer ", "Bearer wrong", "Basic " + tok, tok, "Bearer " + tok + "x", "Bearer  " + tok} {
			t.Run(rt.Method+" "+rt.Path+" "+auth, func(t *testing.T) {
				r := e.do(t, request{method: rt.Method, target: target, noAuth: true, header: http.Header{"Authorization": {auth}}})
				want(t, r, http.StatusUnauthorized, "missing or invalid bearer token")
				if !strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Bearer") {
					t.Errorf("WWW-Authenticate %q", r.Header.Get("WWW-Authenticate"))
				}
			})
		}
	}
	if _, err := e.store.Get(context.Background(), "mqtt", "c1"); err != nil {
		t.Errorf("a refused request changed the store: %v", err)
	}
	for _, auth := range []string{"Bearer " + tok, "bearer " + tok} {
		want(t, e.do(t, request{method: "GET", target: "/v1/backends", header: http.Header{"Authorization": {auth}}}), http.StatusOK)
	}
	want(t, e.do(t, request{method: "GET", target: "/v1/nope", noAuth: true}), http.StatusNotFound)
	for _, open := range []string{"/healthz", "/readyz", "/openapi.yaml"} {
		want(t, e.do(t, request{method: "GET", target: open, noAuth: true}), http.StatusOK)
	}
	if logs := e.logs.String(); strings.Contains(logs, tok) || strings.Contains(strings.ToLower(logs), "authorization") {
		t.Errorf("the log shows the token or the header:\n%s", logs)
	}

	t.Run("token from config", func(t *testing.T) {
		e := newEnv(t, memory.New(memory.Options{}), func(c *config.Config, _ *api.Options) { c.APIToken = "from-config" })
		want(t, e.do(t, request{method: "GET", target: "/v1/backends", noAuth: true}), http.StatusUnauthorized)
		want(t, e.do(t, request{method: "GET", target: "/v1/backends", header: http.Header{"Authorization": {"Bearer from-config"}}}), http.StatusOK)
	})
	t.Run("no token", func(t *testing.T) {
		e := newEnv(t, memory.New(memory.Options{}))
		want(t, e.do(t, request{method: "GET", target: "/v1/backends"}), http.StatusOK)
	})
}

func TestRoutingErrors(t *testing.T) {
	e := newEnv(t, memory.New(memory.Options{}))
	want(t, e.get(t, "/nope"), http.StatusNotFound)
	want(t, e.get(t, "/v1/nope"), http.StatusNotFound)
	r := e.do(t, request{method: http.MethodPost, target: "/v1/backends"})
	want(t, r, http.StatusMethodNotAllowed)
	if !strings.Contains(r.Header.Get("Allow"), "GET") {
		t.Errorf("Allow %q", r.Header.Get("Allow"))
	}
	want(t, e.do(t, request{method: http.MethodPost, target: bindingPath("mqtt", "c1"), body: `{"server":"n1"}`}), http.StatusMethodNotAllowed)
}

func TestHealth(t *testing.T) {
	forEachStore(t, func(t *testing.T, st store.Store) {
		e := newEnv(t, st)
		for _, p := range []string{"/healthz", "/readyz"} {
			r := e.get(t, p)
			want(t, r, http.StatusOK)
			if string(bytes.TrimSpace(r.Body)) != `{"status":"ok"}` {
				t.Errorf("%s: %s", p, r.Body)
			}
		}
	})
}

func TestStoreFailure(t *testing.T) {
	e := newEnv(t, failingStore{memory.New(memory.Options{})})

	r := e.get(t, "/readyz")
	if r.Code != http.StatusServiceUnavailable || string(bytes.TrimSpace(r.Body)) != `{"status":"unavailable"}` {
		t.Errorf("readyz: %s", r.Body)
	}
	want(t, e.get(t, "/healthz"), http.StatusOK)

	// The cause is logged, not shown.
	r = e.get(t, bindingPath("mqtt", "c1"))
	want(t, r, http.StatusInternalServerError)
	if string(bytes.TrimSpace(r.Body)) != `{"error":"internal error"}` {
		t.Errorf("500 body %s", r.Body)
	}
	if !regexp.MustCompile(`level=ERROR .*connection refused \(test\)`).MatchString(e.logs.String()) {
		t.Errorf("cause not logged at error:\n%s", e.logs.String())
	}
	// Once: the request line itself stays at debug.
	if n := len(regexp.MustCompile(`level=(WARN|ERROR) .*`).FindAllString(e.logs.String(), -1)); n != 1 {
		t.Errorf("500 logged %d times at warn or above, want once:\n%s", n, e.logs.String())
	}
	want(t, e.put(t, "/v1/backends/mqtt/servers/n1/drain", ""), http.StatusInternalServerError)

	// What the agent knows is still shown; the counts are null.
	list := decode[struct {
		Backends []backend `json:"backends"`
	}](t, e.get(t, "/v1/backends")).Backends
	for _, s := range list[0].Servers {
		if s.Bindings != nil || !s.Up {
			t.Errorf("server %+v, want up with null bindings", s)
		}
	}
}

func TestRequestLog(t *testing.T) {
	e := newEnv(t, memory.New(memory.Options{}))
	want(t, e.get(t, "/v1/backends/mqtt/bindings/c1"), http.StatusNotFound)
	if !regexp.MustCompile(`level=DEBUG msg="api request" method=GET path=/v1/backends/mqtt/bindings/c1 status=404`).MatchString(e.logs.String()) {
		t.Errorf("request not logged:\n%s", e.logs.String())
	}
}

func TestCheckListen(t *testing.T) {
	for _, tc := range []struct {
		addr, token string
		ok          bool
	}{
		{"127.0.0.1:8080", "", true},
		{"127.0.0.2:8080", "", true},
		{"localhost:8080", "", true},
		{"[::1]:8080", "", true},
		{"", "", true}, // API disabled
		{"0.0.0.0:8080", "", false},
		{":8080", "", false},
		{"[::]:8080", "", false},
		{"10.1.2.3:8080", "", false},
		{"example.com:8080", "", false},
		{"0.0.0.0:8080", "tok", true},
		{"10.1.2.3:8080", "tok", true},
	} {
		err := api.CheckListen(tc.addr, tc.token)
		if (err == nil) != tc.ok {
			t.Errorf("CheckListen(%q, %q) = %v, want ok=%v", tc.addr, tc.token, err, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "api_token") {
			t.Errorf("error %q does not say what to set", err)
		}
	}
}

func TestNew(t *testing.T) {
	if _, err := api.New(api.Options{}); err == nil {
		t.Error("New without store and agent succeeded")
	}
}

// TestServe runs the real server: a 65535-byte id through a real HTTP
// request line, then a graceful shutdown.
func TestServe(t *testing.T) {
	forEachStore(t, func(t *testing.T, st store.Store) {
		e := newEnv(t, st)
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- e.api.Serve(l) }()
		base := "http://" + l.Addr().String()

		long := make([]byte, store.MaxClientIDLen)
		for i := range long {
			long[i] = byte(255 - i%256)
		}
		u := base + bindingPath("mqtt", string(long))
		req, _ := http.NewRequest(http.MethodPut, u, strings.NewReader(`{"server":"n3"}`))
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Fatalf("PUT: %s", res.Status)
		}
		res, err = http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		var b binding
		strictDecode(t, body, &b)
		checkBinding(t, b, string(long), "n3")

		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := e.api.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("Serve after Shutdown: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Serve did not return after Shutdown")
		}
	})
}

func TestServeRefusesOpenListener(t *testing.T) {
	l, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Skipf("cannot listen on all interfaces: %v", err)
	}
	defer l.Close()
	e := newEnv(t, memory.New(memory.Options{}))
	if err := e.api.Serve(l); err == nil || !strings.Contains(err.Error(), "api_token") {
		t.Fatalf("Serve on %s without token: %v", l.Addr(), err)
	}
}
