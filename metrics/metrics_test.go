package metrics_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/stickyd/stickyd/agent"
	"github.com/stickyd/stickyd/api"
	"github.com/stickyd/stickyd/config"
	"github.com/stickyd/stickyd/internal/spoptest"
	"github.com/stickyd/stickyd/metrics"
	"github.com/stickyd/stickyd/spoe"
	"github.com/stickyd/stickyd/store"
	"github.com/stickyd/stickyd/store/memory"
)

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

// testConfig has one backend "mqtt" keyed by client id, servers n1..n3.
func testConfig(t testing.TB) *config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.TTL = config.Duration(10 * time.Minute)
	cfg.Backends = []config.Backend{{Name: "mqtt", Key: config.KeyClientID, Servers: []config.Server{
		{Name: "n1", Address: "10.0.0.1:1883", Weight: 1},
		{Name: "n2", Address: "10.0.0.2:1883", Weight: 1},
		{Name: "n3", Address: "10.0.0.3:1883", Weight: 1},
	}}}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("test config: %v", err)
	}
	return &cfg
}

// faultyStore is a memory store whose GetOrClaim fails on demand.
type faultyStore struct {
	store.Store
	mu  sync.Mutex
	err error
}

func (f *faultyStore) fail(err error) {
	f.mu.Lock()
	f.err = err
	f.mu.Unlock()
}

func (f *faultyStore) GetOrClaim(ctx context.Context, backend, clientID, proposed string, ttl time.Duration) (store.Claim, error) {
	f.mu.Lock()
	err := f.err
	f.mu.Unlock()
	if err != nil {
		return store.Claim{}, err
	}
	return f.Store.GetOrClaim(ctx, backend, clientID, proposed, ttl)
}

type rig struct {
	cfg   *config.Config
	mem   *faultyStore
	store store.Store // instrumented
	m     *metrics.Metrics
	agent *agent.Agent
}

func newRig(t testing.TB) *rig {
	t.Helper()
	cfg := testConfig(t)
	mem := &faultyStore{Store: memory.New(memory.Options{})}
	t.Cleanup(func() { mem.Close() })
	m := metrics.New(metrics.Options{Version: "v1.2.3-test", Logger: discard})
	st := metrics.InstrumentStore(mem, m)
	ag, err := agent.New(cfg, st, discard, agent.Options{
		ObserveDecision: m.ObserveDecision,
		BreakerFailures: 3,
		BreakerCooldown: time.Hour, // stays open once opened
	})
	if err != nil {
		t.Fatal(err)
	}
	m.RegisterAgent(ag)
	return &rig{cfg: cfg, mem: mem, store: st, m: m, agent: ag}
}

// decide asks for one client; down lists servers HAProxy reports down.
func (r *rig) decide(backend, cid string, down ...string) agent.Decision {
	q := &agent.Query{Backend: backend, ClientID: []byte(cid)}
	if b := r.agent.Backend(backend); b != nil {
		for i, s := range b.Servers {
			isDown := false
			for _, d := range down {
				isDown = isDown || d == s.Name
			}
			q.SetUp(i, !isDown)
		}
	}
	return r.agent.Decide(context.Background(), q)
}

// exposition is one parsed scrape.
type exposition struct {
	raw      string
	families map[string]*dto.MetricFamily
}

func scrape(t *testing.T, h http.Handler) exposition {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", rec.Code, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("content type %q", ct)
	}
	raw := rec.Body.String()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(raw))
	if err != nil {
		t.Fatalf("parse exposition: %v\n%s", err, raw)
	}
	return exposition{raw: raw, families: fams}
}

// find returns the series of a family whose labels include want.
func (e exposition) find(t *testing.T, name string, want map[string]string) *dto.Metric {
	t.Helper()
	f, ok := e.families[name]
	if !ok {
		t.Fatalf("no metric %s", name)
	}
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, lp := range m.GetLabel() {
			have[lp.GetName()] = lp.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		return m
	}
	t.Fatalf("no series %s%v", name, want)
	return nil
}

// value is the value of a counter or gauge series, or the sample count of
// a histogram.
func (e exposition) value(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	m := e.find(t, name, labels)
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	t.Fatalf("%s%v: unexpected type", name, labels)
	return 0
}

func (e exposition) expect(t *testing.T, name string, labels map[string]string, want float64) {
	t.Helper()
	if got := e.value(t, name, labels); got != want {
		t.Errorf("%s%v = %v, want %v", name, labels, got, want)
	}
}

func l(kv ...string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

func TestDecisionsStoreAndBreaker(t *testing.T) {
	r := newRig(t)
	h := r.m.Handler()

	// Before any decision: every outcome and every store op/kind already
	// has a zero series, so rate() and absent()-free alerts work at once.
	e := scrape(t, h)
	for _, o := range agent.Outcomes() {
		e.expect(t, "stickyd_decisions_total", l("outcome", o.String()), 0)
		e.expect(t, "stickyd_decision_duration_seconds", l("outcome", o.String()), 0)
	}
	for _, op := range []string{"get_or_claim", "move", "get", "put", "delete", "list", "count_by_server", "delete_by_server", "set_draining", "draining", "ping"} {
		e.expect(t, "stickyd_store_operation_duration_seconds", l("op", op), 0)
		for _, kind := range []string{"timeout", "canceled", "other"} {
			e.expect(t, "stickyd_store_errors_total", l("op", op, "kind", kind), 0)
		}
	}
	e.expect(t, "stickyd_store_breaker_state", l("state", "closed"), 1)
	e.expect(t, "stickyd_build_info", l("version", "v1.2.3-test"), 1)

	placed := r.decide("mqtt", "c1")
	if placed.Outcome != agent.OutcomePlaced {
		t.Fatalf("first decision: %v", placed.Outcome)
	}
	if d := r.decide("mqtt", "c1"); d.Outcome != agent.OutcomeExisting {
		t.Fatalf("second decision: %v", d.Outcome)
	}
	if d := r.decide("mqtt", "c1", placed.Server); d.Outcome != agent.OutcomeMoved {
		t.Fatalf("server down: %v", d.Outcome)
	}
	if d := r.decide("mqtt", ""); d.Outcome != agent.OutcomeNoKey {
		t.Fatalf("no key: %v", d.Outcome)
	}
	if d := r.decide("nope", "c1"); d.Outcome != agent.OutcomeUnknownBackend {
		t.Fatalf("unknown backend: %v", d.Outcome)
	}
	if d := r.decide("mqtt", "c2", "n1", "n2", "n3"); d.Outcome != agent.OutcomeNoServer {
		t.Fatalf("all down: %v", d.Outcome)
	}
	if err := r.store.Put(context.Background(), store.Binding{Backend: "mqtt", ClientID: "p1", Server: "n1", Pinned: true}); err != nil {
		t.Fatal(err)
	}
	if d := r.decide("mqtt", "p1", "n1"); d.Outcome != agent.OutcomePinnedDown {
		t.Fatalf("pinned to a down server: %v", d.Outcome)
	}
	// Three failures of each kind open the breaker (BreakerFailures 3) ...
	for _, err := range []error{
		fmt.Errorf("redis get-or-claim: %w", context.DeadlineExceeded),
		fmt.Errorf("redis get-or-claim: %w", context.Canceled),
		errors.New("dial tcp 127.0.0.1:6379: connect: connection refused"),
	} {
		r.mem.fail(err)
		if d := r.decide("mqtt", "c3"); d.Outcome != agent.OutcomeFallback || d.Server == "" {
			t.Fatalf("store failing (%v): %+v", err, d)
		}
	}
	if s := r.agent.BreakerState(); s != "open" {
		t.Fatalf("breaker %s, want open", s)
	}
	// ... after which decisions skip the store.
	if d := r.decide("mqtt", "c3"); d.Outcome != agent.OutcomeFallback {
		t.Fatalf("breaker open: %v", d.Outcome)
	}

	e = scrape(t, h)
	wantOutcomes := map[string]float64{
		"placed": 1, "existing": 1, "moved": 1, "no_key": 1, "unknown_backend": 1,
		"no_server": 1, "pinned_down": 1, "fallback": 4,
	}
	for _, o := range agent.Outcomes() {
		e.expect(t, "stickyd_decisions_total", l("outcome", o.String()), wantOutcomes[o.String()])
		e.expect(t, "stickyd_decision_duration_seconds", l("outcome", o.String()), wantOutcomes[o.String()])
	}
	// The agent's own counters agree.
	for name, n := range r.agent.Stats().Outcomes {
		if float64(n) != wantOutcomes[name] {
			t.Errorf("agent counted %s=%d, metrics %v", name, n, wantOutcomes[name])
		}
	}
	// Histogram buckets are cumulative and start at 50µs.
	hist := e.find(t, "stickyd_decision_duration_seconds", l("outcome", "placed")).Histogram
	if b := hist.GetBucket(); len(b) != len(metrics.DecisionBuckets)+1 || // + the +Inf bucket
		math.Abs(b[0].GetUpperBound()-50e-6) > 1e-12 || b[len(b)-1].GetCumulativeCount() != 1 {
		t.Errorf("decision buckets: %v", b)
	}

	// get_or_claim: placed, existing, moved, pinned_down + 3 failures; the
	// breaker skip makes no call.
	e.expect(t, "stickyd_store_operation_duration_seconds", l("op", "get_or_claim"), 7)
	e.expect(t, "stickyd_store_operation_duration_seconds", l("op", "move"), 1)
	e.expect(t, "stickyd_store_operation_duration_seconds", l("op", "put"), 1)
	e.expect(t, "stickyd_store_errors_total", l("op", "get_or_claim", "kind", "timeout"), 1)
	e.expect(t, "stickyd_store_errors_total", l("op", "get_or_claim", "kind", "canceled"), 1)
	e.expect(t, "stickyd_store_errors_total", l("op", "get_or_claim", "kind", "other"), 1)
	e.expect(t, "stickyd_store_errors_total", l("op", "move", "kind", "other"), 0)

	e.expect(t, "stickyd_store_breaker_state", l("state", "open"), 1)
	e.expect(t, "stickyd_store_breaker_state", l("state", "closed"), 0)
	e.expect(t, "stickyd_store_breaker_state", l("state", "half_open"), 0)
	e.expect(t, "stickyd_store_breaker_skips_total", nil, 1)
}

func TestInstrumentStorePassesErrorsThrough(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	_, err := r.store.Get(ctx, "mqtt", "nobody")
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get: %v, want ErrNotFound", err)
	}
	if err := r.store.Delete(ctx, "mqtt", "nobody"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Delete: %v, want ErrNotFound", err)
	}
	if _, err := r.store.List(ctx, "mqtt", store.ListOptions{Cursor: "garbage!"}); !errors.Is(err, store.ErrBadCursor) {
		t.Fatalf("List: %v, want ErrBadCursor", err)
	}
	boom := errors.New("boom")
	r.mem.fail(boom)
	if _, err := r.store.GetOrClaim(ctx, "mqtt", "c", "n1", time.Minute); err != boom {
		t.Fatalf("GetOrClaim: %v, want the very error", err)
	}
	r.mem.fail(nil)
	c, err := r.store.GetOrClaim(ctx, "mqtt", "c", "n1", time.Minute)
	if err != nil || c.Server != "n1" || !c.Claimed {
		t.Fatalf("GetOrClaim: %+v %v", c, err)
	}
	if err := r.store.Ping(ctx); err != nil {
		t.Fatal(err)
	}

	e := scrape(t, r.m.Handler())
	// Not found is an answer: counted apart, not as an error.
	e.expect(t, "stickyd_store_not_found_total", l("op", "get"), 1)
	e.expect(t, "stickyd_store_not_found_total", l("op", "delete"), 1)
	for _, op := range []string{"get", "delete", "list"} {
		for _, kind := range []string{"timeout", "canceled", "other"} {
			e.expect(t, "stickyd_store_errors_total", l("op", op, "kind", kind), 0)
		}
	}
	e.expect(t, "stickyd_store_errors_total", l("op", "get_or_claim", "kind", "other"), 1)
	e.expect(t, "stickyd_store_operation_duration_seconds", l("op", "get_or_claim"), 2)
	e.expect(t, "stickyd_store_operation_duration_seconds", l("op", "list"), 1)
	e.expect(t, "stickyd_store_operation_duration_seconds", l("op", "ping"), 1)
}

// timeoutErr is a network timeout as a Redis client returns it.
type timeoutErr struct{}

func (timeoutErr) Error() string   { return "read tcp: i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

var _ net.Error = timeoutErr{}

func TestStoreErrorKinds(t *testing.T) {
	r := newRig(t)
	cases := []struct {
		err  error
		kind string
	}{
		{context.DeadlineExceeded, "timeout"},
		{fmt.Errorf("redis: %w", os.ErrDeadlineExceeded), "timeout"},
		{fmt.Errorf("redis: %w", timeoutErr{}), "timeout"},
		{fmt.Errorf("redis: %w", context.Canceled), "canceled"},
		{errors.New("READONLY You can't write against a read only replica"), "other"},
	}
	want := map[string]float64{}
	for _, c := range cases {
		r.mem.fail(c.err)
		if _, err := r.store.GetOrClaim(context.Background(), "mqtt", "c", "n1", 0); err != c.err {
			t.Fatalf("error changed: %v", err)
		}
		want[c.kind]++
	}
	e := scrape(t, r.m.Handler())
	for kind, n := range want {
		e.expect(t, "stickyd_store_errors_total", l("op", "get_or_claim", "kind", kind), n)
	}
}

func TestBindingsRefresh(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	for i := range 10 {
		r.decide("mqtt", fmt.Sprintf("dev-%d", i))
	}
	// A binding to a server no longer configured shows too.
	if err := r.store.Put(ctx, store.Binding{Backend: "mqtt", ClientID: "old", Server: "n9"}); err != nil {
		t.Fatal(err)
	}
	counts, err := r.mem.CountByServer(ctx, "mqtt")
	if err != nil {
		t.Fatal(err)
	}

	// Nothing before the first refresh: a scrape never counts.
	if _, ok := scrape(t, r.m.Handler()).families["stickyd_bindings"]; ok {
		t.Fatal("stickyd_bindings before any refresh")
	}
	if err := r.m.RefreshBindings(ctx, r.store, r.agent.Backends(), time.Second); err != nil {
		t.Fatal(err)
	}
	e := scrape(t, r.m.Handler())
	total := 0.0
	for _, s := range []string{"n1", "n2", "n3", "n9"} {
		e.expect(t, "stickyd_bindings", l("backend", "mqtt", "server", s), float64(counts[s]))
		total += float64(counts[s])
	}
	if total != 11 {
		t.Errorf("bindings total %v, want 11 (counts %v)", total, counts)
	}
	if ts := e.value(t, "stickyd_bindings_refresh_timestamp_seconds", l("backend", "mqtt")); math.Abs(ts-float64(time.Now().Unix())) > 60 {
		t.Errorf("refresh timestamp %v", ts)
	}
	e.expect(t, "stickyd_store_operation_duration_seconds", l("op", "count_by_server"), 1)

	// A failed count keeps the last values and is counted.
	failing := &failCount{Store: r.store}
	if err := r.m.RefreshBindings(ctx, failing, r.agent.Backends(), time.Second); err == nil {
		t.Fatal("want an error")
	}
	e = scrape(t, r.m.Handler())
	e.expect(t, "stickyd_bindings", l("backend", "mqtt", "server", "n9"), 1)
	e.expect(t, "stickyd_bindings_refresh_errors_total", l("backend", "mqtt"), 1)

	// The loop refreshes at once, then every interval, until ctx ends.
	r.decide("mqtt", "late")
	lctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		r.m.RunBindingsRefresher(lctx, r.store, r.agent.Backends(), time.Hour, time.Second)
		close(done)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		e = scrape(t, r.m.Handler())
		sum := 0.0
		for _, s := range []string{"n1", "n2", "n3", "n9"} {
			sum += e.value(t, "stickyd_bindings", l("backend", "mqtt", "server", s))
		}
		if sum == 12 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("refresher did not refresh: total %v", sum)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
}

type failCount struct{ store.Store }

func (failCount) CountByServer(context.Context, string) (map[string]int, error) {
	return nil, errors.New("connection refused")
}

// spopConnect is the NOTIFY of one CONNECT, as HAProxy sends it.
func spopConnect(sid uint64, cid string) []byte {
	return spoptest.Notify(sid, 1, spoe.MessageName+"-mqtt", []spoptest.KV{
		{"backend", "mqtt"}, {"client_id", []byte(cid)}, {"up_n1", true}, {"up_n2", true}, {"up_n3", true},
	})
}

func readSPOPFrame(t *testing.T, c net.Conn) []byte {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var hdr [4]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		t.Fatalf("read frame: %v", err)
	}
	body := make([]byte, binary.BigEndian.Uint32(hdr[:]))
	if _, err := io.ReadFull(c, body); err != nil {
		t.Fatalf("read frame: %v", err)
	}
	return body
}

func TestSPOEStats(t *testing.T) {
	r := newRig(t)
	srv := spoe.NewServer(r.agent, discard, spoe.Limits{MaxConnections: 2, FrameTimeout: 300 * time.Millisecond})
	r.m.RegisterSPOE(srv.Stats)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	dial := func() net.Conn {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}

	// HAProxy: HELLO, then one CONNECT; the connection stays open.
	c1 := dial()
	if _, err := c1.Write(spoptest.Hello("test-engine", false)); err != nil {
		t.Fatal(err)
	}
	if b := readSPOPFrame(t, c1); b[0] != 101 {
		t.Fatalf("want AGENT-HELLO, got frame type %d", b[0])
	}
	if _, err := c1.Write(spopConnect(7, "dev-1")); err != nil {
		t.Fatal(err)
	}
	if b := readSPOPFrame(t, c1); b[0] != 103 {
		t.Fatalf("want ACK, got frame type %d", b[0])
	}
	// A health check: HELLO, answer, close.
	c2 := dial()
	if _, err := c2.Write(spoptest.Hello("test-engine", true)); err != nil {
		t.Fatal(err)
	}
	readSPOPFrame(t, c2)
	// Garbage on the port: an HTTP request.
	c3 := dial()
	_, _ = c3.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))

	waitFor := func(what string, ok func(spoe.Stats) bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !ok(srv.Stats()) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %+v", what, srv.Stats())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitFor("garbage closed", func(s spoe.Stats) bool { return s.BadFrames == 1 && s.Connections == 1 })
	// With two open (MaxConnections), a third is refused.
	c4 := dial()
	if _, err := c4.Write(spoptest.Hello("test-engine", false)); err != nil {
		t.Fatal(err)
	}
	readSPOPFrame(t, c4)
	dial()
	waitFor("refused", func(s spoe.Stats) bool { return s.Refused == 1 })
	// A connection that never sends its HELLO is closed.
	c4.Close()
	waitFor("c4 closed", func(s spoe.Stats) bool { return s.Connections == 1 })
	dial()
	waitFor("hello timeout", func(s spoe.Stats) bool { return s.HelloTimeouts == 1 && s.Connections == 1 })

	e := scrape(t, r.m.Handler())
	e.expect(t, "stickyd_spoe_connections", nil, 1)
	e.expect(t, "stickyd_spoe_connections_accepted_total", nil, 5)
	e.expect(t, "stickyd_spoe_connections_refused_total", nil, 1)
	e.expect(t, "stickyd_spoe_timeouts_total", l("phase", "hello"), 1)
	e.expect(t, "stickyd_spoe_timeouts_total", l("phase", "frame"), 0)
	e.expect(t, "stickyd_spoe_timeouts_total", l("phase", "idle"), 0)
	e.expect(t, "stickyd_spoe_timeouts_total", l("phase", "write"), 0)
	e.expect(t, "stickyd_spoe_frames_total", nil, 4) // three HELLOs, one NOTIFY
	e.expect(t, "stickyd_spoe_bad_frames_total", nil, 1)
	e.expect(t, "stickyd_spoe_panics_total", nil, 0)
	e.expect(t, "stickyd_spoe_messages_total", nil, 1)
	e.expect(t, "stickyd_spoe_bad_messages_total", nil, 0)
	e.expect(t, "stickyd_spoe_health_checks_total", nil, 1)
	e.expect(t, "stickyd_decisions_total", l("outcome", "placed"), 1)
}

// newAPI is the admin API as `stickyd serve` builds it.
func newAPI(t *testing.T, r *rig, token string) http.Handler {
	t.Helper()
	srv, err := api.New(api.Options{
		Config: r.cfg, Store: r.store, Agent: r.agent, Logger: discard, Token: token,
		Metrics: r.m.Handler(), Middleware: []echo.MiddlewareFunc{r.m.APIMiddleware()},
	})
	if err != nil {
		t.Fatal(err)
	}
	// The API refuses httptest's Host example.com (not loopback).
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		req.Host = "127.0.0.1:8080"
		srv.Handler().ServeHTTP(w, req)
	})
}

func TestAPIMetricsUseRouteTemplates(t *testing.T) {
	r := newRig(t)
	h := newAPI(t, r, "s3cret")
	do := func(method, target string, auth bool) int {
		req := httptest.NewRequest(method, target, nil)
		if auth {
			req.Header.Set("Authorization", "Bearer s3cret")
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	const secret = "secret-client-id-4711"
	calls := []struct {
		method, target string
		auth           bool
		code           int
	}{
		{"GET", "/v1/backends/mqtt/bindings/" + secret, true, 404},
		{"GET", "/v1/backends/mqtt/bindings/" + secret + "%2Fx", true, 404},
		{"GET", "/v1/backends/mqtt/bindings/" + secret, false, 401},
		{"GET", "/v1/backends/mqtt/placement/" + secret, true, 200},
		{"POST", "/v1/backends/mqtt/bindings/" + secret, true, 405},
		{"GET", "/" + secret, true, 404},
		{"BREW", "/v1/backends", true, 405},
		{"GET", "/healthz", false, 200},
	}
	for _, c := range calls {
		if got := do(c.method, c.target, c.auth); got != c.code {
			t.Fatalf("%s %s: %d, want %d", c.method, c.target, got, c.code)
		}
	}
	// /metrics is open even with a token.
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("GET /metrics without a token: %d", rec.Code)
	}
	e := scrape(t, h)
	if strings.Contains(e.raw, "secret-client-id") {
		t.Fatalf("a client id became a label value:\n%s", grep(e.raw, "secret"))
	}
	const bindingRoute = "/v1/backends/:backend/bindings/:client_id"
	e.expect(t, "stickyd_api_requests_total", l("method", "GET", "route", bindingRoute, "code", "404"), 2)
	e.expect(t, "stickyd_api_requests_total", l("method", "GET", "route", bindingRoute, "code", "401"), 1)
	e.expect(t, "stickyd_api_requests_total", l("method", "POST", "route", bindingRoute, "code", "405"), 1)
	e.expect(t, "stickyd_api_requests_total", l("method", "GET", "route", "/v1/backends/:backend/placement/:client_id", "code", "200"), 1)
	e.expect(t, "stickyd_api_requests_total", l("method", "GET", "route", "unmatched", "code", "404"), 1)
	e.expect(t, "stickyd_api_requests_total", l("method", "OTHER", "route", "/v1/backends", "code", "405"), 1)
	e.expect(t, "stickyd_api_requests_total", l("method", "GET", "route", "/healthz", "code", "200"), 1)
	e.expect(t, "stickyd_api_requests_total", l("method", "GET", "route", "/metrics", "code", "200"), 1)
	e.expect(t, "stickyd_api_request_duration_seconds", l("method", "GET", "route", bindingRoute), 3)
}

func grep(s, sub string) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(line, sub) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

// TestDashboard checks every metric and label the Grafana dashboard
// queries exists, after exercising every metric once.
func TestDashboard(t *testing.T) {
	data, err := os.ReadFile("../deploy/grafana/stickyd.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		SchemaVersion int `json:"schemaVersion"`
		Inputs        []struct {
			Name, Type, PluginID string
		} `json:"__inputs"`
		Panels     []json.RawMessage `json:"panels"`
		Templating struct {
			List []struct {
				Datasource struct{ UID string } `json:"datasource"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("stickyd.json: %v", err)
	}
	if dash.SchemaVersion < 36 {
		t.Errorf("schemaVersion %d", dash.SchemaVersion)
	}
	if len(dash.Inputs) != 1 || dash.Inputs[0].Name != "DS_PROMETHEUS" {
		t.Errorf("__inputs: %+v", dash.Inputs)
	}

	// Exercise everything, then gather once.
	r := newRig(t)
	srv := spoe.NewServer(r.agent, discard, spoe.Limits{})
	r.m.RegisterSPOE(srv.Stats)
	r.m.RegisterStoreCache(func() store.CacheStats { return store.CacheStats{} })
	r.decide("mqtt", "c1")
	if err := r.m.RefreshBindings(context.Background(), r.store, r.agent.Backends(), time.Second); err != nil {
		t.Fatal(err)
	}
	h := newAPI(t, r, "")
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/v1/backends", nil))
	fams, err := r.m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	labels := map[string]map[string]bool{} // metric → label names
	add := func(name string, f *dto.MetricFamily) {
		labels[name] = map[string]bool{}
		for _, m := range f.GetMetric() {
			for _, lp := range m.GetLabel() {
				labels[name][lp.GetName()] = true
			}
		}
	}
	for _, f := range fams {
		add(f.GetName(), f)
		if f.GetType() == dto.MetricType_HISTOGRAM {
			for _, s := range []string{"_bucket", "_count", "_sum"} {
				add(f.GetName()+s, f)
			}
			labels[f.GetName()+"_bucket"]["le"] = true
		}
	}

	var exprs []string
	var walk func(v any)
	ids := map[float64]bool{}
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if ds, ok := v["datasource"].(map[string]any); ok && ds["type"] == "prometheus" && ds["uid"] != "${DS_PROMETHEUS}" {
				t.Errorf("datasource %v is not ${DS_PROMETHEUS}", ds)
			}
			if e, ok := v["expr"].(string); ok {
				exprs = append(exprs, e)
			}
			for _, x := range v {
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	for _, raw := range dash.Panels {
		var p map[string]any
		if err := json.Unmarshal(raw, &p); err != nil {
			t.Fatal(err)
		}
		id, _ := p["id"].(float64)
		if ids[id] {
			t.Errorf("panel id %v repeated", id)
		}
		ids[id] = true
		if p["type"] != "row" {
			if _, ok := p["targets"]; !ok {
				t.Errorf("panel %q has no targets", p["title"])
			}
		}
		walk(p)
	}
	if len(exprs) < 15 {
		t.Fatalf("only %d expressions found", len(exprs))
	}

	metricRE := regexp.MustCompile(`\b((?:stickyd|go|process)_[a-zA-Z0-9_]+)(\{[^}]*\})?`)
	labelRE := regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)`)
	byRE := regexp.MustCompile(`\bby \(([^)]*)\)`)
	used := map[string]bool{}
	for _, expr := range exprs {
		if strings.Count(expr, "(") != strings.Count(expr, ")") {
			t.Errorf("unbalanced parentheses: %s", expr)
		}
		for _, m := range metricRE.FindAllStringSubmatch(expr, -1) {
			name := m[1]
			have, ok := labels[name]
			if !ok {
				t.Errorf("dashboard uses %s, which the registry does not have (expr %s)", name, expr)
				continue
			}
			used[name] = true
			for _, lm := range labelRE.FindAllStringSubmatch(m[2], -1) {
				if lm[1] == "job" || lm[1] == "instance" {
					continue // added by Prometheus
				}
				if !have[lm[1]] {
					t.Errorf("%s has no label %q (expr %s)", name, lm[1], expr)
				}
			}
		}
		for _, m := range byRE.FindAllStringSubmatch(expr, -1) {
			for _, lbl := range strings.Split(m[1], ",") {
				lbl = strings.TrimSpace(lbl)
				if lbl == "instance" || lbl == "job" {
					continue
				}
				found := false
				for name := range used {
					if strings.Contains(expr, name) && labels[name][lbl] {
						found = true
					}
				}
				if !found {
					t.Errorf("by (%s): no metric of the expression has label %q: %s", m[1], lbl, expr)
				}
			}
		}
	}
	// The panels the runbook relies on are there.
	for _, name := range []string{
		"stickyd_decisions_total", "stickyd_decision_duration_seconds_bucket", "stickyd_store_operation_duration_seconds_bucket",
		"stickyd_store_errors_total", "stickyd_store_breaker_state", "stickyd_bindings", "stickyd_spoe_connections",
		"stickyd_spoe_frames_total", "stickyd_spoe_bad_frames_total", "stickyd_api_requests_total",
		"stickyd_redis_cache_lookups_total", "stickyd_redis_cache_enabled",
	} {
		if !used[name] {
			t.Errorf("no panel uses %s", name)
		}
	}
	var names []string
	for n := range used {
		names = append(names, n)
	}
	sort.Strings(names)
	t.Logf("dashboard metrics: %s", strings.Join(names, " "))
}

// BenchmarkGetOrClaim compares the bare memory store with the instrumented
// one on existing bindings (the connect path). Both should be 0 allocs/op.
func BenchmarkGetOrClaim(b *testing.B) {
	ctx := context.Background()
	mem := memory.New(memory.Options{})
	b.Cleanup(func() { _ = mem.Close() })
	m := metrics.New(metrics.Options{NoRuntimeCollectors: true})
	inst := metrics.InstrumentStore(mem, m)
	const n = 10000
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("client-%06d", i)
		if _, err := mem.GetOrClaim(ctx, "be", ids[i], "s1", time.Hour); err != nil {
			b.Fatal(err)
		}
	}
	for _, c := range []struct {
		name string
		st   store.Store
	}{{"bare", mem}, {"instrumented", inst}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if _, err := c.st.GetOrClaim(ctx, "be", ids[i%n], "s2", time.Hour); err != nil {
					b.Fatal(err)
				}
				i += 7919
			}
		})
	}
}

func TestInstrumentedGetOrClaimDoesNotAllocate(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation count")
	}
	ctx := context.Background()
	mem := memory.New(memory.Options{})
	t.Cleanup(func() { _ = mem.Close() })
	m := metrics.New(metrics.Options{NoRuntimeCollectors: true})
	inst := metrics.InstrumentStore(mem, m)
	if _, err := inst.GetOrClaim(ctx, "be", "c1", "s1", time.Hour); err != nil {
		t.Fatal(err)
	}
	bare := testing.AllocsPerRun(200, func() { _, _ = mem.GetOrClaim(ctx, "be", "c1", "s2", time.Hour) })
	got := testing.AllocsPerRun(200, func() { _, _ = inst.GetOrClaim(ctx, "be", "c1", "s2", time.Hour) })
	if got > bare {
		t.Fatalf("instrumented GetOrClaim: %v allocs/op, bare store %v", got, bare)
	}
	obs := testing.AllocsPerRun(200, func() { m.ObserveDecision(agent.OutcomeExisting, time.Millisecond) })
	if obs != 0 {
		t.Fatalf("ObserveDecision: %v allocs/op", obs)
	}
}

func TestRedisCacheMetrics(t *testing.T) {
	m := metrics.New(metrics.Options{NoRuntimeCollectors: true})
	st := store.CacheStats{Hits: 7, Misses: 3, Invalidations: 2, Refreshes: 5, RefreshErrors: 1, Resets: 4, Enabled: true, Entries: 9}
	m.RegisterStoreCache(func() store.CacheStats { return st })
	e := scrape(t, m.Handler())
	e.expect(t, "stickyd_redis_cache_lookups_total", l("result", "hit"), 7)
	e.expect(t, "stickyd_redis_cache_lookups_total", l("result", "miss"), 3)
	e.expect(t, "stickyd_redis_cache_invalidations_total", nil, 2)
	e.expect(t, "stickyd_redis_cache_refreshes_total", nil, 5)
	e.expect(t, "stickyd_redis_cache_refresh_errors_total", nil, 1)
	e.expect(t, "stickyd_redis_cache_resets_total", nil, 4)
	e.expect(t, "stickyd_redis_cache_enabled", nil, 1)
	e.expect(t, "stickyd_redis_cache_entries", nil, 9)
}
