package ctl_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stickyd/stickyd/agent"
	"github.com/stickyd/stickyd/api"
	"github.com/stickyd/stickyd/config"
	"github.com/stickyd/stickyd/ctl"
	"github.com/stickyd/stickyd/store"
	"github.com/stickyd/stickyd/store/memory"
)

// oddIDs are client ids that break naive path building or terminals.
var oddIDs = []string{
	"a/b", "a%2Fb", "with space", "\x00bin", ".", "..", "-dash", "ünï", "\xff\xfe", "?q=1#f", "+plus", `back\slash`, "\x1b[31mred",
}

// apiEnv is a real API (memory store, real agent) over httptest.
type apiEnv struct {
	url   string
	store store.Store
	agent *agent.Agent
	env   map[string]string
}

type envOpt struct {
	token       string
	twoBackends bool
}

func newAPI(t *testing.T, o envOpt) *apiEnv {
	t.Helper()
	cfg := config.Default()
	cfg.TTL = config.Duration(10 * time.Minute)
	cfg.Backends = []config.Backend{{Name: "mqtt", Key: config.KeyClientID, Servers: []config.Server{
		{Name: "n1", Address: "10.0.0.1:1883", Weight: 1},
		{Name: "n2", Address: "10.0.0.2:1883", Weight: 1},
	}}}
	if o.twoBackends {
		cfg.Backends = append(cfg.Backends, config.Backend{Name: "users", Key: config.KeyUsername, Servers: []config.Server{
			{Name: "u1", Address: "10.0.1.1:1883", Weight: 1},
		}})
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	st := memory.New(memory.Options{})
	t.Cleanup(func() { st.Close() })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ag, err := agent.New(&cfg, st, log, agent.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := api.New(api.Options{Config: &cfg, Store: st, Agent: ag, Logger: log, Token: o.token})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	env := map[string]string{ctl.EnvAPI: hs.URL}
	if o.token != "" {
		env[ctl.EnvToken] = o.token
	}
	return &apiEnv{url: hs.URL, store: st, agent: ag, env: env}
}

type result struct {
	code           int
	stdout, stderr string
}

func (e *apiEnv) run(t *testing.T, args ...string) result {
	t.Helper()
	return runWith(t, e.env, args...)
}

func runWith(t *testing.T, env map[string]string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := ctl.Run(args, &out, &errb, func(k string) string { return env[k] })
	return result{code, out.String(), errb.String()}
}

// ok fails unless the command exited 0.
func (r result) ok(t *testing.T) result {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	return r
}

// fails checks the exit code and that stderr holds every substring.
func (r result) fails(t *testing.T, code int, substrs ...string) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", r.code, code, r.stdout, r.stderr)
	}
	for _, s := range substrs {
		if !strings.Contains(r.stderr, s) {
			t.Errorf("stderr does not mention %q:\n%s", s, r.stderr)
		}
	}
}

func (e *apiEnv) put(t *testing.T, id, server string, pinned bool) {
	t.Helper()
	if err := e.store.Put(context.Background(), store.Binding{Backend: "mqtt", ClientID: id, Server: server, TTL: time.Hour, Pinned: pinned}); err != nil {
		t.Fatal(err)
	}
}

func (e *apiEnv) get(t *testing.T, id string) (store.Binding, bool) {
	t.Helper()
	b, err := e.store.Get(context.Background(), "mqtt", id)
	if errors.Is(err, store.ErrNotFound) {
		return b, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return b, true
}

// shown is how a table prints an id: quoted when it holds bytes a
// terminal should not get raw.
func shown(id string) string {
	quoted := map[string]string{
		"\x00bin":     `"\x00bin"`,
		"\xff\xfe":    `"\xff\xfe"`,
		"\x1b[31mred": `"\x1b[31mred"`,
	}
	if q, ok := quoted[id]; ok {
		return q
	}
	return id
}

// tableRows splits a table into its cells (columns are two or more
// spaces apart; no test value holds two spaces).
func tableRows(t *testing.T, out string) [][]string {
	t.Helper()
	var rows [][]string
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		rows = append(rows, regexp.MustCompile(`\s{2,}`).Split(strings.TrimSpace(line), -1))
	}
	return rows
}

type binding struct {
	ClientID    string `json:"client_id"`
	ClientIDB64 string `json:"client_id_b64"`
	Server      string `json:"server"`
	TTLSeconds  int64  `json:"ttl_seconds"`
	Pinned      bool   `json:"pinned"`
	Connected   bool   `json:"connected"`
}

func strictJSON(t *testing.T, data string, v any) {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("decode %T: %v\n%s", v, err, data)
	}
}

func idOf(t *testing.T, b binding) string {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(b.ClientIDB64)
	if err != nil {
		t.Fatal(err)
	}
	return string(raw)
}

func TestBindingsOddIDs(t *testing.T) {
	e := newAPI(t, envOpt{})
	for _, id := range oddIDs {
		t.Run(strconv.Quote(id), func(t *testing.T) {
			// pin: table
			r := e.run(t, "bindings", "pin", "--server", "n2", "--", id).ok(t)
			rows := tableRows(t, r.stdout)
			want := [][]string{{"CLIENT ID", "SERVER", "TTL", "PINNED", "CONNECTED"}, {shown(id), "n2", "10m", "yes", "no"}}
			if len(rows) != 2 || strings.Join(rows[0], "|") != strings.Join(want[0], "|") || strings.Join(rows[1], "|") != strings.Join(want[1], "|") {
				t.Errorf("pin output %q, want %q", rows, want)
			}
			if b, ok := e.get(t, id); !ok || b.Server != "n2" || !b.Pinned {
				t.Fatalf("store holds %+v, %v", b, ok)
			}
			if bytes.ContainsAny([]byte(r.stdout), "\x00\x1b") || bytes.IndexByte([]byte(r.stdout), 0xff) >= 0 {
				t.Errorf("raw control bytes reach the terminal: %q", r.stdout)
			}

			// get: table and JSON
			r = e.run(t, "bindings", "get", "--", id).ok(t)
			if rows := tableRows(t, r.stdout); len(rows) != 2 || rows[1][0] != shown(id) || rows[1][1] != "n2" {
				t.Errorf("get output %q", r.stdout)
			}
			r = e.run(t, "--json", "bindings", "get", "--", id).ok(t)
			var b binding
			strictJSON(t, r.stdout, &b)
			if idOf(t, b) != id || b.Server != "n2" || !b.Pinned || b.TTLSeconds < 590 || b.TTLSeconds > 600 {
				t.Errorf("get --json %+v", b)
			}

			// evict, then it is gone
			r = e.run(t, "bindings", "evict", "--", id).ok(t)
			if !strings.Contains(r.stdout, "Evicted the binding of "+shown(id)) {
				t.Errorf("evict output %q", r.stdout)
			}
			if _, ok := e.get(t, id); ok {
				t.Error("still bound after evict")
			}
			e.run(t, "bindings", "get", "--", id).fails(t, 1, "no binding for client id", "HTTP 404")
			e.run(t, "bindings", "evict", "--", id).fails(t, 1, "no binding", "HTTP 404")
		})
	}
	// An id that does not start with "-" needs no "--", and flags may
	// follow it.
	e.run(t, "bindings", "pin", "a/b", "--server", "n1", "--unpinned").ok(t)
	if b, ok := e.get(t, "a/b"); !ok || b.Server != "n1" || b.Pinned {
		t.Errorf("store holds %+v", b)
	}
}

func TestBindingsList(t *testing.T) {
	e := newAPI(t, envOpt{})
	want := map[string]string{}
	for i := range 7 {
		id := "dev-" + strconv.Itoa(i)
		srv := []string{"n1", "n2"}[i%2]
		e.put(t, id, srv, i == 0)
		want[id] = srv
	}
	for _, id := range oddIDs {
		e.put(t, id, "n1", false)
		want[id] = "n1"
	}

	t.Run("all table", func(t *testing.T) {
		r := e.run(t, "bindings", "list", "--all", "--limit", "3").ok(t)
		rows := tableRows(t, r.stdout)
		if strings.Join(rows[0], "|") != "CLIENT ID|SERVER|TTL|PINNED|CONNECTED" {
			t.Errorf("header %q", rows[0])
		}
		got := map[string]string{}
		for _, row := range rows[1:] {
			got[row[0]] = row[1]
		}
		for id, srv := range want {
			if got[shown(id)] != srv {
				t.Errorf("%s: %q, want %q", shown(id), got[shown(id)], srv)
			}
		}
		if len(rows)-1 != len(want) || r.stderr != "" {
			t.Errorf("%d rows, want %d; stderr %q", len(rows)-1, len(want), r.stderr)
		}
	})

	t.Run("all json", func(t *testing.T) {
		r := e.run(t, "bindings", "list", "--all", "--limit", "2", "--json").ok(t)
		var p struct {
			Items      []binding `json:"items"`
			NextCursor string    `json:"next_cursor"`
		}
		strictJSON(t, r.stdout, &p)
		if len(p.Items) != len(want) || p.NextCursor != "" {
			t.Fatalf("%d items, cursor %q", len(p.Items), p.NextCursor)
		}
		for _, b := range p.Items {
			if want[idOf(t, b)] != b.Server {
				t.Errorf("%+v", b)
			}
		}
	})

	t.Run("pages", func(t *testing.T) {
		seen := map[string]bool{}
		args := []string{"bindings", "list", "--limit", "4"}
		for page := 0; ; page++ {
			if page > 10 {
				t.Fatal("paging does not end")
			}
			r := e.run(t, args...).ok(t)
			for _, row := range tableRows(t, r.stdout)[1:] {
				seen[row[0]] = true
			}
			m := regexp.MustCompile(`--cursor (\S+)\n$`).FindStringSubmatch(r.stderr)
			if m == nil {
				if r.stderr != "" {
					t.Errorf("stderr %q", r.stderr)
				}
				break
			}
			cursor := strings.Trim(m[1], "'")
			args = []string{"bindings", "list", "--limit", "4", "--cursor", cursor}
		}
		if len(seen) != len(want) {
			t.Errorf("paged through %d ids, want %d", len(seen), len(want))
		}
		// --json prints the API's page as is, cursor included.
		r := e.run(t, "bindings", "list", "--limit", "4", "--json").ok(t)
		var p struct {
			Items      []binding `json:"items"`
			NextCursor string    `json:"next_cursor"`
		}
		strictJSON(t, r.stdout, &p)
		if len(p.Items) != 4 || p.NextCursor == "" {
			t.Errorf("page %+v", p)
		}
	})

	t.Run("filters", func(t *testing.T) {
		r := e.run(t, "bindings", "list", "--server", "n2", "--prefix", "dev-").ok(t)
		rows := tableRows(t, r.stdout)[1:]
		if len(rows) != 3 {
			t.Fatalf("rows %q", rows)
		}
		for _, row := range rows {
			if !strings.HasPrefix(row[0], "dev-") || row[1] != "n2" {
				t.Errorf("row %q", row)
			}
		}
		// A prefix is bytes, "+" included.
		r = e.run(t, "bindings", "list", "--prefix", "+").ok(t)
		if rows := tableRows(t, r.stdout); len(rows) != 2 || rows[1][0] != "+plus" {
			t.Errorf("prefix +: %q", r.stdout)
		}
		r = e.run(t, "bindings", "list", "--prefix", "zzz").ok(t)
		if r.stdout != "" || !strings.Contains(r.stderr, "No bindings") {
			t.Errorf("empty list: %q %q", r.stdout, r.stderr)
		}
		e.run(t, "bindings", "list", "--server", "n9").fails(t, 1, `unknown server "n9"`, "HTTP 400")
		e.run(t, "bindings", "list", "--cursor", "garbage!").fails(t, 1, "invalid cursor")
	})
}

func TestBindingsPinTTL(t *testing.T) {
	e := newAPI(t, envOpt{})
	for _, tc := range []struct {
		args   []string
		ttl    time.Duration // 0: never expires
		pinned bool
		shown  string
	}{
		{[]string{"--ttl", "10m"}, 10 * time.Minute, true, "10m"},
		{[]string{"--ttl", "0"}, 0, true, "never"},
		{[]string{"--ttl", "90061"}, 90061 * time.Second, true, "1d1h1m1s"},
		{[]string{"--ttl", "2h", "--unpinned"}, 2 * time.Hour, false, "2h"},
		{nil, 10 * time.Minute, true, "10m"}, // the configured ttl
	} {
		args := append([]string{"bindings", "pin", "c1", "--server", "n1"}, tc.args...)
		r := e.run(t, args...).ok(t)
		b, _ := e.get(t, "c1")
		if b.Pinned != tc.pinned || (tc.ttl == 0) != (b.TTL == 0) || b.TTL > tc.ttl || b.TTL < tc.ttl-5*time.Second {
			t.Errorf("%v: store %+v", tc.args, b)
		}
		pinned := "no"
		if tc.pinned {
			pinned = "yes"
		}
		if rows := tableRows(t, r.stdout); len(rows) != 2 || rows[1][2] != tc.shown || rows[1][3] != pinned {
			t.Errorf("%v: output %q", tc.args, r.stdout)
		}
	}
	for _, bad := range []string{"-5", "1.5s", "soon", "-1m"} {
		e.run(t, "bindings", "pin", "c2", "--server", "n1", "--ttl", bad).fails(t, 2, "--ttl")
	}
	if _, ok := e.get(t, "c2"); ok {
		t.Error("a refused pin was stored")
	}
	e.run(t, "bindings", "pin", "c2", "--server", "n9").fails(t, 1, `unknown server "n9"`, "n1, n2")
	e.run(t, "bindings", "pin", "c2", "--server", "n1", "--ttl", "87600h1s").fails(t, 1, "ttl_seconds")
	// --json prints the binding as stored.
	r := e.run(t, "bindings", "pin", "c3", "--server", "n2", "--json").ok(t)
	var b binding
	strictJSON(t, r.stdout, &b)
	if b.ClientID != "c3" || b.Server != "n2" || !b.Pinned || b.TTLSeconds != 600 {
		t.Errorf("pin --json: %+v", b)
	}
}

func TestBindingsEvictByServer(t *testing.T) {
	e := newAPI(t, envOpt{})
	for i, id := range []string{"a", "b", "c", "d"} {
		e.put(t, id, []string{"n1", "n1", "n1", "n2"}[i], false)
	}
	e.run(t, "bindings", "evict", "--server", "n1").fails(t, 2, "--yes")
	if _, ok := e.get(t, "a"); !ok {
		t.Fatal("evicted without --yes")
	}
	e.run(t, "bindings", "evict", "a", "--server", "n1", "--yes").fails(t, 2, "not both")
	e.run(t, "bindings", "evict", "a", "--yes").fails(t, 2, "--yes only goes with --server")
	e.run(t, "bindings", "evict", "--server", "n9", "--yes").fails(t, 1, `unknown server "n9"`)

	r := e.run(t, "bindings", "evict", "--server", "n1", "--yes").ok(t)
	if !strings.Contains(r.stdout, "Evicted 3 binding(s) of server n1 in backend mqtt") {
		t.Errorf("output %q", r.stdout)
	}
	if _, ok := e.get(t, "d"); !ok {
		t.Error("n2's binding went too")
	}
	r = e.run(t, "bindings", "evict", "--server", "n2", "--yes", "--json").ok(t)
	if strings.TrimSpace(r.stdout) != `{"deleted":1}` {
		t.Errorf("--json: %q", r.stdout)
	}
	// Evicting one id prints nothing with --json: the API answers 204.
	e.put(t, "x", "n1", false)
	if r := e.run(t, "bindings", "evict", "x", "--json").ok(t); r.stdout != "" {
		t.Errorf("--json evict printed %q", r.stdout)
	}
}

func TestServers(t *testing.T) {
	e := newAPI(t, envOpt{})
	e.put(t, "a", "n1", false)
	e.put(t, "b", "n1", false)
	e.put(t, "c", "n2", false)
	// HAProxy reports n2 down.
	q := &agent.Query{Backend: "mqtt", ClientID: []byte("probe")}
	q.SetUp(0, true)
	q.SetUp(1, false)
	e.agent.Decide(context.Background(), q)
	if err := e.store.Delete(context.Background(), "mqtt", "probe"); err != nil {
		t.Fatal(err)
	}

	r := e.run(t, "servers", "list").ok(t)
	want := "SERVER  ADDRESS        WEIGHT  STATE  DRAIN  BINDINGS  CONNECTED\n" +
		"n1      10.0.0.1:1883  1       up     -      2         0\n" +
		"n2      10.0.0.2:1883  1       down   -      1         0\n"
	if r.stdout != want {
		t.Errorf("servers list:\n%s\nwant:\n%s", r.stdout, want)
	}

	r = e.run(t, "servers", "drain", "n1").ok(t)
	if !strings.Contains(r.stdout, "Server n1 of backend mqtt is draining") || !strings.Contains(r.stdout, "its 2 binding(s) stay") ||
		!strings.Contains(r.stdout, "stickyd ctl bindings evict --backend mqtt --server n1 --yes") {
		t.Errorf("drain output %q", r.stdout)
	}
	if !e.agent.Backend("mqtt").States()[0].Draining {
		t.Error("n1 not draining")
	}
	if draining, err := e.store.Draining(context.Background(), "mqtt"); err != nil || !draining["n1"] {
		t.Errorf("store draining %v %v", draining, err)
	}
	r = e.run(t, "servers", "list").ok(t)
	if rows := tableRows(t, r.stdout); rows[1][4] != "draining" || rows[2][4] != "-" {
		t.Errorf("list after drain:\n%s", r.stdout)
	}
	r = e.run(t, "servers", "list", "--json").ok(t)
	var out struct {
		Servers []struct {
			Name         string `json:"name"`
			Address      string `json:"address"`
			Weight       int    `json:"weight"`
			Up           bool   `json:"up"`
			Reported     bool   `json:"reported"`
			Draining     bool   `json:"draining"`
			HAProxyDrain bool   `json:"haproxy_drain"`
			Bindings     *int   `json:"bindings"`
			Connected    *int   `json:"connected"`
		} `json:"servers"`
	}
	strictJSON(t, r.stdout, &out)
	if len(out.Servers) != 2 || !out.Servers[0].Draining || out.Servers[1].Up || *out.Servers[0].Bindings != 2 {
		t.Errorf("servers --json: %s", r.stdout)
	}

	r = e.run(t, "--json", "servers", "undrain", "n1").ok(t)
	if !strings.Contains(r.stdout, `"draining":false`) {
		t.Errorf("undrain --json %q", r.stdout)
	}
	r = e.run(t, "servers", "undrain", "n1").ok(t) // idempotent
	if !strings.Contains(r.stdout, "no longer draining") {
		t.Errorf("undrain output %q", r.stdout)
	}
	if e.agent.Backend("mqtt").States()[0].Draining {
		t.Error("n1 still draining")
	}
	e.run(t, "servers", "drain", "n9").fails(t, 1, `unknown server "n9"`, "n1, n2", "HTTP 404")
}

func TestBackendChoice(t *testing.T) {
	e := newAPI(t, envOpt{twoBackends: true})
	e.run(t, "servers", "list").fails(t, 2, "--backend is required", "mqtt, users")
	r := e.run(t, "servers", "list", "--backend", "users").ok(t)
	if rows := tableRows(t, r.stdout); len(rows) != 2 || rows[1][0] != "u1" {
		t.Errorf("users: %q", r.stdout)
	}
	e.run(t, "bindings", "pin", "alice", "--backend", "users", "--server", "u1").ok(t)
	if _, err := e.store.Get(context.Background(), "users", "alice"); err != nil {
		t.Errorf("users/alice: %v", err)
	}
	e.run(t, "bindings", "get", "alice", "--backend", "nope").fails(t, 1, `unknown backend "nope"`)
	// A backend name is escaped too.
	e.run(t, "servers", "list", "--backend", "a/b").fails(t, 1, `unknown backend "a/b"`)
}

func TestAuth(t *testing.T) {
	const tok = "s3cret"
	e := newAPI(t, envOpt{token: tok})
	noToken := map[string]string{ctl.EnvAPI: e.url}
	r := runWith(t, noToken, "servers", "list")
	r.fails(t, 1, "HTTP 401", "STICKYD_API_TOKEN", "--token-file")
	if strings.Contains(r.stderr, tok) {
		t.Error("the token leaked into a message")
	}
	runWith(t, map[string]string{ctl.EnvAPI: e.url, ctl.EnvToken: "wrong"}, "servers", "list").fails(t, 1, "HTTP 401")
	runWith(t, map[string]string{ctl.EnvAPI: e.url, ctl.EnvToken: tok}, "servers", "list").ok(t)

	dir := t.TempDir()
	file := filepath.Join(dir, "token")
	if err := os.WriteFile(file, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	runWith(t, noToken, "--token-file", file, "servers", "list").ok(t)
	runWith(t, noToken, "servers", "list", "--token-file="+file).ok(t)
	// The file wins over the environment.
	runWith(t, map[string]string{ctl.EnvAPI: e.url, ctl.EnvToken: "wrong"}, "servers", "list", "--token-file", file).ok(t)
	runWith(t, noToken, "--token-file", filepath.Join(dir, "missing"), "servers", "list").fails(t, 1, "token file")
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	runWith(t, noToken, "--token-file", empty, "servers", "list").fails(t, 1, "is empty")
}

func TestAPIAddress(t *testing.T) {
	e := newAPI(t, envOpt{})
	// --api wins over STICKYD_API; a trailing slash is fine.
	runWith(t, map[string]string{ctl.EnvAPI: "http://127.0.0.1:1"}, "--api", e.url+"/", "servers", "list").ok(t)
	runWith(t, map[string]string{}, "servers", "list", "--api", e.url).ok(t)

	// Nothing listens: the message names the URL.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + l.Addr().String()
	l.Close()
	runWith(t, map[string]string{ctl.EnvAPI: dead}, "servers", "list").
		fails(t, 1, "cannot reach the stickyd API", "GET "+dead+"/v1/backends", "STICKYD_API")
	runWith(t, map[string]string{ctl.EnvAPI: dead}, "servers", "list", "--backend", "mqtt").
		fails(t, 1, dead+"/v1/backends/mqtt/servers")

	// Something else answers: its status is shown, not a JSON error.
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "<html>bad gateway</html>", http.StatusBadGateway)
	}))
	defer proxy.Close()
	runWith(t, map[string]string{ctl.EnvAPI: proxy.URL}, "servers", "list", "--backend", "mqtt").
		fails(t, 1, "502 Bad Gateway", "HTTP 502")

	// The default is the loopback API of `stickyd serve`.
	// (Something may listen there on a developer's machine.)
	r := runWith(t, map[string]string{}, "servers", "list", "--backend", "mqtt")
	if strings.Contains(r.stderr, "cannot reach") && !strings.Contains(r.stderr, ctl.DefaultAPI+"/v1/backends/mqtt/servers") {
		t.Errorf("default address not used: %s", r.stderr)
	}
}

func TestUsage(t *testing.T) {
	// An unreachable API: a usage error must be found before any request.
	env := map[string]string{ctl.EnvAPI: "http://127.0.0.1:1"}
	for _, args := range [][]string{
		{},
		{"bogus"},
		{"bindings"},
		{"bindings", "bogus"},
		{"servers", "bogus"},
		{"bindings", "get"},
		{"bindings", "get", "a", "b"},
		{"bindings", "get", ""},
		{"bindings", "get", "-x"}, // an id starting with "-" needs "--"
		{"bindings", "pin", "a"},
		{"bindings", "pin", "--server", "n1"},
		{"bindings", "pin", "a", "--server", "n1", "--ttl", "x"},
		{"bindings", "evict"},
		{"bindings", "evict", "--server", "n1"},
		{"bindings", "list", "extra"},
		{"bindings", "list", "--limit", "5000"},
		{"bindings", "list", "--limit", "-1"},
		{"bindings", "list", "--limit", "x"},
		{"bindings", "list", "--nope"},
		{"servers", "list", "extra"},
		{"servers", "drain"},
		{"servers", "undrain", "a", "b"},
		{"--api", "ftp://x", "servers", "list", "--backend", "mqtt"},
		{"--api", "127.0.0.1:8080", "servers", "list", "--backend", "mqtt"},
		{"--nope", "servers", "list"},
	} {
		r := runWith(t, env, args...)
		if r.code != 2 || r.stdout != "" || !strings.Contains(r.stderr, "stickyd ctl") {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", args, r.code, r.stdout, r.stderr)
		}
	}
	for _, args := range [][]string{{"help"}, {"-h"}, {"--help"}, {"bindings", "help"}, {"bindings", "list", "-h"}} {
		r := runWith(t, env, args...)
		if r.code != 0 || !strings.Contains(r.stdout, "Usage: stickyd ctl") || r.stderr != "" {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", args, r.code, r.stdout, r.stderr)
		}
	}
}

func TestFlagPositions(t *testing.T) {
	e := newAPI(t, envOpt{})
	e.put(t, "c1", "n1", false)
	var outs []string
	for _, args := range [][]string{
		{"--json", "bindings", "get", "c1"},
		{"bindings", "get", "c1", "--json"},
		{"bindings", "get", "--json", "c1", "--backend", "mqtt"},
		{"--backend=mqtt", "bindings", "get", "c1", "--json"}, // not global: an error
	} {
		r := e.run(t, args...)
		outs = append(outs, strconv.Itoa(r.code)+" "+r.stdout)
	}
	if outs[0] != outs[1] || outs[1] != outs[2] || !strings.HasPrefix(outs[0], `0 {"client_id":"c1"`) {
		t.Errorf("outputs differ: %q", outs)
	}
	if !strings.HasPrefix(outs[3], "2 ") {
		t.Errorf("--backend before the command: %q", outs[3])
	}
}
