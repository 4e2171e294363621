package api_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"image/png"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stickyd/stickyd/agent"
	"github.com/stickyd/stickyd/api"
	"github.com/stickyd/stickyd/config"
	"github.com/stickyd/stickyd/internal/testenv"
	"github.com/stickyd/stickyd/metrics"
	"github.com/stickyd/stickyd/store"
	"github.com/stickyd/stickyd/store/memory"
)

// startOpsDashboard serves the API with an admin and a read token and
// metrics: backend mqtt, n1 with 20 bindings (ops-00..19), n2 with none.
func startOpsDashboard(t *testing.T) (string, store.Store) {
	t.Helper()
	cfg := config.Default()
	cfg.TTL = config.Duration(10 * time.Minute)
	cfg.Backends = []config.Backend{{Name: "mqtt", Key: config.KeyClientID, Servers: []config.Server{
		{Name: "n1", Address: "10.0.0.1:1883", Weight: 1},
		{Name: "n2", Address: "10.0.0.2:1883", Weight: 1},
	}}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	mx := metrics.New(metrics.Options{Logger: log})
	st := metrics.InstrumentStore(memory.New(memory.Options{}), mx)
	t.Cleanup(func() { st.Close() })
	ag, err := agent.New(&cfg, st, log, agent.Options{ObserveDecision: mx.ObserveDecision})
	if err != nil {
		t.Fatal(err)
	}
	mx.RegisterAgent(ag)
	ctx := context.Background()
	for i := range 20 {
		q := &agent.Query{Backend: "mqtt", ClientID: []byte(fmt.Sprintf("probe-%d", i))}
		ag.Decide(ctx, q) // decisions for the chart
		if err := st.Put(ctx, store.Binding{Backend: "mqtt", ClientID: fmt.Sprintf("ops-%02d", i), Server: "n1", TTL: time.Hour}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.DeleteByServer(ctx, "mqtt", "n2"); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		_ = st.Delete(ctx, "mqtt", fmt.Sprintf("probe-%d", i))
	}
	srv, err := api.New(api.Options{Config: &cfg, Store: st, Agent: ag, Logger: log, Token: "admin-tok", ReadToken: "read-tok", Metrics: mx.Handler()})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		ag.StopRebalances()
	})
	return "http://" + l.Addr().String(), st
}

func screenshot(t *testing.T, page *cdpPage, name string) {
	t.Helper()
	var shot struct{ Data string }
	page.call(t, "Page.captureScreenshot", map[string]any{"format": "png", "captureBeyondViewport": true}, &shot)
	data, err := base64.StdEncoding.DecodeString(shot.Data)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(strings.NewReader(string(data)))
	if err != nil {
		t.Fatal(err)
	}
	colours := map[[3]uint32]bool{}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y += 2 {
		for x := b.Min.X; x < b.Max.X; x += 2 {
			r, g, bl, _ := img.At(x, y).RGBA()
			colours[[3]uint32{r >> 8, g >> 8, bl >> 8}] = true
		}
	}
	if len(colours) < 50 {
		t.Errorf("%s: only %d colours: blank page?", name, len(colours))
	}
	dir := os.Getenv("STICKYD_SCREENSHOTS")
	if dir == "" {
		dir = t.TempDir()
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot %s (%dx%d, %d colours)", p, b.Dx(), b.Dy(), len(colours))
}

// The day-2 dashboard in headless Chromium: the bindings browser filters
// and pages, evicts and pins with confirmation, a rebalance runs with
// progress, the live chart samples /metrics; with the read-only token
// every button is disabled and says why.
func TestDashboardOps(t *testing.T) {
	bin := testenv.RequireBinary(t, "chromium")
	url, st := startOpsDashboard(t)
	page := startCDP(t, bin)
	page.call(t, "Page.addScriptToEvaluateOnNewDocument", map[string]any{"source": `
		window.__problems = []; window.__confirms = [];
		document.addEventListener('securitypolicyviolation', e => window.__problems.push('CSP ' + e.violatedDirective + ' ' + e.blockedURI));
		window.addEventListener('error', e => window.__problems.push('error ' + e.message));
		window.addEventListener('unhandledrejection', e => window.__problems.push('rejection ' + e.reason));
		if (!sessionStorage.getItem('stickyd.apiToken')) sessionStorage.setItem('stickyd.apiToken', 'admin-tok');
		window.confirm = (m) => { window.__confirms.push(m); return true; };`}, nil)
	page.call(t, "Page.navigate", map[string]any{"url": url + "/dashboard/"}, nil)

	rows := `document.querySelectorAll('#b-rows tr').length`
	page.waitFor(t, rows+` === 20 && document.body.dataset.role === 'admin'`)
	page.eval(t, `document.getElementById('b-prefix').value = 'ops-1'; document.querySelector('#b-form button[type=submit]').click()`)
	page.waitFor(t, rows+` === 10`)
	page.click(t, `#b-rows tr[data-id="ops-12"] button[data-op=evict]`)
	page.waitFor(t, rows+` === 9`)
	if _, err := st.Get(context.Background(), "mqtt", "ops-12"); err == nil {
		t.Error("ops-12 still bound after Evict")
	}
	page.click(t, `#b-rows tr[data-id="ops-13"] button[data-op=pin]`)
	page.waitFor(t, `document.querySelector('#b-rows tr[data-id="ops-13"]') && document.querySelector('#b-rows tr[data-id="ops-13"]').textContent.includes('pinned')`)
	if b, err := st.Get(context.Background(), "mqtt", "ops-13"); err != nil || !b.Pinned {
		t.Errorf("ops-13 after Pin: %+v %v", b, err)
	}

	// 19 bindings on n1, none on n2 (1:1): 9 move within 5% of 9.5.
	page.click(t, `#j-rebalance`)
	page.waitFor(t, `document.getElementById('job-progress').dataset.state === 'done'`)
	if got := page.eval(t, `document.getElementById('job-progress').textContent`); !strings.Contains(fmt.Sprint(got), "done, moved 9 of 9") {
		t.Errorf("rebalance progress %q", got)
	}
	counts, _ := st.CountByServer(context.Background(), "mqtt")
	if counts["n1"] != 10 || counts["n2"] != 9 {
		t.Errorf("after rebalance: %v", counts)
	}
	if got := page.eval(t, `window.__confirms.length`); fmt.Sprint(got) != "3" {
		t.Errorf("%v confirmations asked, want 3 (evict, pin, rebalance)", got)
	}

	// The chart needs two samples of /metrics, 3 s apart.
	page.waitFor(t, `Number(document.getElementById('chart').dataset.samples) >= 1 && document.getElementById('store-state').textContent === 'ok' && document.getElementById('breaker-state').textContent === 'closed'`)
	if got := page.eval(t, `document.getElementById('legend').textContent`); !strings.Contains(fmt.Sprint(got), "placed:") {
		t.Errorf("legend %q", got)
	}
	screenshot(t, page, "dashboard-ops-admin.png")

	// Read-only: every change button disabled, saying why.
	page.eval(t, `sessionStorage.setItem('stickyd.apiToken', 'read-tok'); location.reload()`)
	page.waitFor(t, `document.body.dataset.role === 'read' && document.querySelectorAll('#b-rows tr').length > 0 && document.querySelectorAll('tr.server').length === 2`)
	page.waitFor(t, `[...document.querySelectorAll('button[data-action], button.op')].every(b => b.disabled && b.title.includes('Read-only token'))`)
	if got := page.eval(t, `[document.getElementById('readonly').hidden, document.querySelectorAll('button[data-action], button.op').length > 5]`); fmt.Sprint(got) != "[false true]" {
		t.Errorf("read-only notice / buttons: %v", got)
	}
	screenshot(t, page, "dashboard-ops-readonly.png")
	if got := page.eval(t, `window.__problems`); fmt.Sprint(got) != "[]" {
		t.Errorf("problems in the page: %v", got)
	}
}
