package api_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/stickyd/stickyd/internal/testenv"
)

// seen records what reached the API and what it answered.
type seen struct {
	method, path, site, origin string
	status                     int
}

type recorder struct {
	mu   sync.Mutex
	reqs []seen
}

// middleware is outermost, so the status it reads is the final one.
func (r *recorder) middleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		err := next(c)
		req := c.Request()
		r.mu.Lock()
		r.reqs = append(r.reqs, seen{req.Method, req.URL.Path, req.Header.Get("Sec-Fetch-Site"),
			req.Header.Get("Origin"), c.Response().Status})
		r.mu.Unlock()
		return err
	}
}

func (r *recorder) matching(method, pathSuffix string) []seen {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []seen
	for _, s := range r.reqs {
		if s.method == method && strings.HasSuffix(s.path, pathSuffix) {
			out = append(out, s)
		}
	}
	return out
}

// attackPage is a foreign page that tries, without a token, what any web
// page may: two no-cors fetches (text/plain and untyped bodies) that
// evacuate n1, a DELETE that would undrain n2 (needs a preflight), then a
// plain form POST that navigates to the API's answer.
const attackPage = `<!doctype html><title>cat pictures</title>
<form id="f" method="POST" enctype="text/plain" action="%[1]s/v1/backends/mqtt/servers/n1/evacuate?rate=100000">
<input name='{"x":"' value='"}'></form>
<script>
(async () => {
  const ev = %[1]q + '/v1/backends/mqtt/servers/n1/evacuate?rate=100000';
  const log = [];
  const note = (p, what) => p.then(() => log.push(what + ' sent'), e => log.push(what + ' failed'));
  await note(fetch(ev, {method: 'POST', mode: 'no-cors', body: '{}', headers: {'Content-Type': 'text/plain'}}), 'text');
  await note(fetch(ev, {method: 'POST', mode: 'no-cors', body: new Blob(['{}'])}), 'untyped');
  await note(fetch(%[1]q + '/v1/backends/mqtt/servers/n2/drain', {method: 'DELETE'}), 'delete');
  document.title = log.join(', ');
  document.getElementById('f').submit();
})();
</script>`

// TestGuardBrowser is issue 10's attack in a real Chromium: foreign pages
// (another site, and the same site on another port) try to evacuate n1
// and undrain n2 of an API without a token; a DNS-rebinding name reaches
// the API's port. Every request gets a 4xx and nothing changes, while the
// API's own dashboard, same-origin, still drains a server.
func TestGuardBrowser(t *testing.T) {
	bin := testenv.RequireBinary(t, "chromium")
	rec := &recorder{}
	d := startDashboard(t, "", rec.middleware)
	foreign := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, attackPage, d.url)
	}))
	t.Cleanup(foreign.Close)
	_, fport, _ := net.SplitHostPort(strings.TrimPrefix(foreign.URL, "http://"))
	_, aport, _ := net.SplitHostPort(strings.TrimPrefix(d.url, "http://"))
	// Test names resolve to 127.0.0.1 in this browser only.
	page := startCDP(t, bin, "--host-resolver-rules=MAP attacker.test 127.0.0.1, MAP rebind.test 127.0.0.1")

	bindings := func() int {
		t.Helper()
		n, err := d.store.CountByServer(context.Background(), "mqtt")
		if err != nil {
			t.Fatal(err)
		}
		return n["n1"]
	}
	for _, tc := range []struct{ origin, site string }{
		{"http://attacker.test:" + fport, "cross-site"},
		{"http://127.0.0.1:" + fport, "same-site"},
	} {
		t.Run(tc.site, func(t *testing.T) {
			page.call(t, "Page.navigate", map[string]any{"url": tc.origin + "/"}, nil)
			// The form's POST navigated to the API's answer.
			page.waitFor(t, `location.href.startsWith(`+jsString(d.url+"/v1/")+`) && document.body.innerText.includes('refused')`)
			body := fmt.Sprint(page.eval(t, `document.body.innerText`))
			if !strings.Contains(body, `Sec-Fetch-Site`) || !strings.Contains(body, tc.site) {
				t.Errorf("form POST answer: %s", body)
			}
			posts := rec.matching(http.MethodPost, "/servers/n1/evacuate")
			if len(posts) != 3 {
				t.Fatalf("evacuate POSTs that reached the API: %+v, want the 3 of the page", posts)
			}
			for _, p := range posts {
				if p.status != http.StatusForbidden || p.site != tc.site || p.origin != tc.origin {
					t.Errorf("evacuate POST: %+v, want 403 from %s (%s)", p, tc.origin, tc.site)
				}
			}
			if dels := rec.matching(http.MethodDelete, "/drain"); len(dels) != 0 {
				t.Errorf("a DELETE got past the preflight: %+v", dels)
			}
			rec.mu.Lock()
			rec.reqs = nil
			rec.mu.Unlock()
		})
	}

	t.Run("rebinding", func(t *testing.T) {
		// A rebinding page runs under its own name at the API's address.
		page.call(t, "Page.navigate", map[string]any{"url": "http://rebind.test:" + aport + "/dashboard/"}, nil)
		page.waitFor(t, `location.hostname === 'rebind.test' && document.body.innerText.includes('not a loopback')`)
		got := rec.matching(http.MethodGet, "/dashboard/")
		if len(got) != 1 || got[0].status != http.StatusForbidden {
			t.Errorf("GET /dashboard/ under rebind.test: %+v", got)
		}
	})

	// Nothing changed: n1 keeps its 5 bindings and no drain, n2 stays
	// draining, no evacuation ever started.
	if n := bindings(); n != 5 {
		t.Errorf("n1 has %d bindings, want 5", n)
	}
	if d.draining(t, "n1") || !d.draining(t, "n2") {
		t.Errorf("drain states changed: n1 %v n2 %v", d.draining(t, "n1"), d.draining(t, "n2"))
	}
	res, err := http.Get(d.url + "/v1/backends/mqtt/servers/n1/evacuate")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNotFound {
		t.Errorf("GET evacuate of n1: %d, want 404 (none ever started)", res.StatusCode)
	}

	t.Run("dashboard", func(t *testing.T) {
		// The API's own page is same-origin: its Drain button works.
		page.call(t, "Page.navigate", map[string]any{"url": d.url + "/dashboard/"}, nil)
		page.click(t, `button[data-action=drain][data-server=n1]`)
		page.waitFor(t, `!!document.querySelector('button[data-action=undrain][data-server=n1]')`)
		if !d.draining(t, "n1") {
			t.Error("n1 is not draining after clicking Drain")
		}
		puts := rec.matching(http.MethodPut, "/servers/n1/drain")
		if len(puts) != 1 || puts[0].status != http.StatusOK || puts[0].origin != d.url || puts[0].site != "same-origin" {
			t.Errorf("the dashboard's PUT: %+v, want 200 from %s (same-origin)", puts, d.url)
		}
	})
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string {
	return fmt.Sprintf("%q", s)
}

// TestGuardCurl: curl as operators type it still works without a token;
// only its default form content type (-d without -H) is refused.
func TestGuardCurl(t *testing.T) {
	bin := testenv.RequireBinary(t, "curl")
	d := startDashboard(t, "")
	curl := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, bin, append([]string{"-s", "-w", " %{http_code}"}, args...)...).Output()
		if err != nil {
			t.Fatalf("curl %v: %v", args, err)
		}
		return string(out)
	}
	bind := d.url + "/v1/backends/mqtt/bindings/curl-1"
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-X", "PUT", d.url + "/v1/backends/mqtt/servers/n1/drain"}, " 200"},
		{[]string{"-X", "DELETE", d.url + "/v1/backends/mqtt/servers/n1/drain"}, " 200"},
		{[]string{"-X", "PUT", "-d", `{"server":"n2"}`, bind}, `"refused: content type \"application/x-www-form-urlencoded\"`},
		{[]string{"-X", "PUT", "-H", "Content-Type: application/json", "-d", `{"server":"n2"}`, bind}, `"server":"n2"`},
		{[]string{"-H", "Host: rebind.test", d.url + "/v1/backends"}, " 403"},
	} {
		if got := curl(tc.args...); !strings.Contains(got, tc.want) {
			t.Errorf("curl %v: %s, want %s", tc.args, got, tc.want)
		}
	}
	if b, err := d.store.Get(context.Background(), "mqtt", "curl-1"); err != nil || b.Server != "n2" {
		t.Errorf("binding %+v %v", b, err)
	}
}
