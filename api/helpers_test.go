package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stickyd/stickyd/agent"
	"github.com/stickyd/stickyd/api"
	"github.com/stickyd/stickyd/config"
	"github.com/stickyd/stickyd/internal/testenv"
	"github.com/stickyd/stickyd/store"
	"github.com/stickyd/stickyd/store/memory"
	"github.com/stickyd/stickyd/store/redis"
)

// forEachStore runs fn against the memory store and a real redis-server.
func forEachStore(t *testing.T, fn func(t *testing.T, st store.Store)) {
	t.Helper()
	t.Run("memory", func(t *testing.T) {
		st := memory.New(memory.Options{})
		t.Cleanup(func() { st.Close() })
		fn(t, st)
	})
	t.Run("redis", func(t *testing.T) {
		r := testenv.StartRedis(t)
		st, err := redis.New(context.Background(), redis.Options{URL: r.URL})
		if err != nil {
			t.Fatalf("redis store: %v", err)
		}
		t.Cleanup(func() { st.Close() })
		fn(t, st)
	})
}

// testConfig has two backends: "mqtt" keyed by client id with three
// servers, "users" keyed by username with one.
func testConfig(t testing.TB) *config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.TTL = config.Duration(10 * time.Minute)
	cfg.Backends = []config.Backend{
		{Name: "mqtt", Key: config.KeyClientID, Servers: []config.Server{
			{Name: "n1", Address: "10.0.0.1:1883", Weight: 1},
			{Name: "n2", Address: "10.0.0.2:1883", Weight: 1},
			{Name: "n3", Address: "10.0.0.3:1883", Weight: 2},
		}},
		{Name: "users", Key: config.KeyUsername, Servers: []config.Server{
			{Name: "u1", Address: "10.0.1.1:1883", Weight: 1},
		}},
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("test config: %v", err)
	}
	return &cfg
}

// env is one API over one store, driven through its http.Handler.
type env struct {
	cfg   *config.Config
	store store.Store
	agent *agent.Agent
	api   *api.Server
	token string
	log   *slog.Logger
	logs  *syncBuffer
}

type envOpt func(*config.Config, *api.Options)

func withToken(tok string) envOpt {
	return func(_ *config.Config, o *api.Options) { o.Token = tok }
}

func newEnv(t *testing.T, st store.Store, opts ...envOpt) *env {
	t.Helper()
	cfg := testConfig(t)
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ag, err := agent.New(cfg, st, log, agent.Options{})
	if err != nil {
		t.Fatalf("agent: %v", err)
	}
	o := api.Options{Config: cfg, Store: st, Agent: ag, Logger: log}
	for _, fn := range opts {
		fn(cfg, &o)
	}
	srv, err := api.New(o)
	if err != nil {
		t.Fatalf("api.New: %v", err)
	}
	tok := o.Token
	if tok == "" {
		tok = cfg.APIToken
	}
	return &env{cfg: cfg, store: st, agent: ag, api: srv, token: tok, log: log, logs: logs}
}

type response struct {
	Code   int
	Header http.Header
	Body   []byte
}

type request struct {
	method, target string
	body           string
	header         http.Header
	noAuth         bool   // do not send the env's token
	host           string // Host header; "" means 127.0.0.1:8080
}

// do sends a request through the handler. target is the raw request URI
// (already escaped). Every response of a documented route is checked
// against openapi.yaml.
func (e *env) do(t *testing.T, r request) response {
	t.Helper()
	var body io.Reader
	if r.body != "" {
		body = strings.NewReader(r.body)
	}
	req := httptest.NewRequest(r.method, r.target, body)
	req.Host = "127.0.0.1:8080" // not httptest's example.com, which the guard refuses
	if r.host != "" {
		req.Host = r.host
	}
	for k, v := range r.header {
		req.Header[k] = v
	}
	if e.token != "" && !r.noAuth && req.Header.Get("Authorization") == "" {
		req.Header.Set("Authorization", "Bearer "+e.token)
	}
	rec := httptest.NewRecorder()
	e.api.Handler().ServeHTTP(rec, req)
	res := response{Code: rec.Code, Header: rec.Header(), Body: rec.Body.Bytes()}
	checkDocumented(t, r.method, req.URL.EscapedPath(), res)
	return res
}

func (e *env) get(t *testing.T, target string) response {
	t.Helper()
	return e.do(t, request{method: http.MethodGet, target: target})
}

func (e *env) put(t *testing.T, target, body string) response {
	t.Helper()
	return e.do(t, request{method: http.MethodPut, target: target, body: body})
}

func (e *env) del(t *testing.T, target string) response {
	t.Helper()
	return e.do(t, request{method: http.MethodDelete, target: target})
}

// want fails unless the response has the status; for errors it also
// checks the JSON error body contains each of substrs.
func want(t *testing.T, r response, code int, substrs ...string) {
	t.Helper()
	if r.Code != code {
		t.Fatalf("status %d, want %d; body %s", r.Code, code, trunc(r.Body))
	}
	if code >= 400 {
		var e struct {
			Error string `json:"error"`
		}
		if err := json.Unmarshal(r.Body, &e); err != nil || e.Error == "" {
			t.Fatalf("error body without a message: %s", r.Body)
		}
		for _, s := range substrs {
			if !strings.Contains(e.Error, s) {
				t.Errorf("error %q does not mention %q", e.Error, s)
			}
		}
	}
}

// strictDecode decodes JSON refusing fields v does not know, so a test
// struct pins the response shape.
func strictDecode(t *testing.T, data []byte, v any) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("decode %T: %v; body %s", v, err, trunc(data))
	}
}

func decode[T any](t *testing.T, r response) T {
	t.Helper()
	var v T
	strictDecode(t, r.Body, &v)
	return v
}

func trunc(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + "..."
	}
	return string(b)
}

// Response shapes, as documented.

type binding struct {
	ClientID    string `json:"client_id"`
	ClientIDB64 string `json:"client_id_b64"`
	Server      string `json:"server"`
	TTLSeconds  int64  `json:"ttl_seconds"`
	Pinned      bool   `json:"pinned"`
	Connected   bool   `json:"connected"`
}

type page struct {
	Items      []binding `json:"items"`
	NextCursor string    `json:"next_cursor"`
}

type server struct {
	Name         string `json:"name"`
	Address      string `json:"address"`
	Weight       int    `json:"weight"`
	Up           bool   `json:"up"`
	Reported     bool   `json:"reported"`
	Draining     bool   `json:"draining"`
	HAProxyDrain bool   `json:"haproxy_drain"`
	Bindings     *int   `json:"bindings"`
	Connected    *int   `json:"connected"`
}

type backend struct {
	Name    string   `json:"name"`
	Key     string   `json:"key"`
	Servers []server `json:"servers"`
}

func bindingPath(backend, id string) string {
	return "/v1/backends/" + backend + "/bindings/" + url.PathEscape(id)
}

// listAll pages through a listing and returns every item; query holds the
// filters (without cursor).
func (e *env) listAll(t *testing.T, backend string, query url.Values) []binding {
	t.Helper()
	var all []binding
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 10000 {
			t.Fatal("listing does not end")
		}
		q := url.Values{}
		for k, v := range query {
			q[k] = v
		}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		r := e.get(t, "/v1/backends/"+backend+"/bindings?"+q.Encode())
		want(t, r, http.StatusOK)
		p := decode[page](t, r)
		if p.Items == nil {
			t.Fatalf("items is null, want []: %s", trunc(r.Body))
		}
		all = append(all, p.Items...)
		if p.NextCursor == "" {
			return all
		}
		cursor = p.NextCursor
	}
}

// syncBuffer collects log output from concurrent handlers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// failingStore is a real store whose reads and writes fail, for the error
// paths the real stores cannot be made to take on demand.
type failingStore struct {
	store.Store
}

var errStoreDown = errors.New("connection refused (test)")

func (failingStore) Ping(context.Context) error { return errStoreDown }
func (failingStore) Get(context.Context, string, string) (store.Binding, error) {
	return store.Binding{}, errStoreDown
}
func (failingStore) CountByServer(context.Context, string) (map[string]int, error) {
	return nil, errStoreDown
}
func (failingStore) SetDraining(context.Context, string, string, bool) error { return errStoreDown }
