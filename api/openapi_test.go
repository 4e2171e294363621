package api_test

import (
	"bytes"
	"fmt"
	"mime"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/labstack/echo/v4"
	"gopkg.in/yaml.v3"

	"github.com/stickyd/stickyd/api"
	"github.com/stickyd/stickyd/config"
	"github.com/stickyd/stickyd/metrics"
	"github.com/stickyd/stickyd/store/memory"
)

// withMetrics serves GET /metrics, as `stickyd serve` does: the spec
// documents it, so the spec tests run with it.
func withMetrics() envOpt {
	return func(_ *config.Config, o *api.Options) {
		m := metrics.New(metrics.Options{NoRuntimeCollectors: true})
		o.Metrics = m.Handler()
		o.Middleware = append(o.Middleware, m.APIMiddleware())
	}
}

// openapi is the part of openapi.yaml the tests check.
type openapi struct {
	Version    string                          `yaml:"openapi"`
	Paths      map[string]map[string]yaml.Node `yaml:"paths"`
	Components struct {
		Responses map[string]specResponse `yaml:"responses"`
	} `yaml:"components"`
}

type specOperation struct {
	Responses map[string]specResponse `yaml:"responses"`
}

type specResponse struct {
	Ref     string              `yaml:"$ref"`
	Content map[string]struct{} `yaml:"content"`
}

var httpMethods = []string{"get", "put", "post", "delete", "patch", "head", "options", "trace"}

var (
	specOnce sync.Once
	spec     openapi
	specErr  error
	// specPaths maps each documented path template to a matcher of
	// escaped request paths.
	specPaths map[string]*regexp.Regexp
)

func loadSpec(t *testing.T) openapi {
	t.Helper()
	specOnce.Do(func() {
		data, err := os.ReadFile("openapi.yaml")
		if err != nil {
			specErr = err
			return
		}
		if specErr = yaml.Unmarshal(data, &spec); specErr != nil {
			return
		}
		specPaths = map[string]*regexp.Regexp{}
		param := regexp.MustCompile(`\\\{[^}]*\\\}`)
		for p := range spec.Paths {
			specPaths[p] = regexp.MustCompile("^" + param.ReplaceAllString(regexp.QuoteMeta(p), `[^/]*`) + "$")
		}
	})
	if specErr != nil {
		t.Fatalf("openapi.yaml: %v", specErr)
	}
	return spec
}

func (s openapi) operation(t *testing.T, path, method string) (specOperation, bool) {
	t.Helper()
	node, ok := s.Paths[path][strings.ToLower(method)]
	if !ok {
		return specOperation{}, false
	}
	var op specOperation
	if err := node.Decode(&op); err != nil {
		t.Fatalf("openapi.yaml: %s %s: %v", method, path, err)
	}
	return op, true
}

// checkDocumented fails the test when a documented route answers with a
// status the spec does not list for it, or a body of another media type.
// Requests to undocumented paths or methods (404/405 checks) are skipped.
func checkDocumented(t *testing.T, method, escapedPath string, res response) {
	t.Helper()
	s := loadSpec(t)
	for tmpl, re := range specPaths {
		if !re.MatchString(escapedPath) {
			continue
		}
		op, ok := s.operation(t, tmpl, method)
		if !ok {
			return
		}
		r, ok := op.Responses[strconv.Itoa(res.Code)]
		if !ok {
			t.Errorf("openapi.yaml: %s %s does not document status %d (body %s)", method, tmpl, res.Code, trunc(res.Body))
			return
		}
		if r.Ref != "" {
			r = s.Components.Responses[strings.TrimPrefix(r.Ref, "#/components/responses/")]
		}
		if len(r.Content) == 0 {
			if len(res.Body) != 0 {
				t.Errorf("%s %s %d: documented without a body, got %s", method, tmpl, res.Code, trunc(res.Body))
			}
			return
		}
		mt, _, _ := mime.ParseMediaType(res.Header.Get("Content-Type"))
		if _, ok := r.Content[mt]; !ok {
			t.Errorf("%s %s %d: content type %q is not documented", method, tmpl, res.Code, mt)
		}
		return
	}
}

// TestOpenAPIRoutes checks that the spec documents exactly the routes the
// server registers, and that it is what GET /openapi.yaml serves.
func TestOpenAPIRoutes(t *testing.T) {
	s := loadSpec(t)
	if !strings.HasPrefix(s.Version, "3.") {
		t.Fatalf("openapi version %q, want 3.x", s.Version)
	}
	for _, tok := range []string{"", "secret"} {
		t.Run(fmt.Sprintf("token=%q", tok), func(t *testing.T) {
			e := newEnv(t, memory.New(memory.Options{}), withToken(tok), withMetrics())
			var routes []string
			for _, r := range e.api.Handler().(*echo.Echo).Routes() {
				if r.Method == echo.RouteNotFound {
					continue // the catch-all a group with middleware adds
				}
				// The dashboard (dashboard.go) is a static web page, not part
				// of the API contract: GET /, /dashboard and /dashboard/...
				// are left out of openapi.yaml and tested in dashboard_test.go.
				if r.Path == "/" || r.Path == "/dashboard" || strings.HasPrefix(r.Path, "/dashboard/") {
					continue
				}
				p := regexp.MustCompile(`:(\w+)`).ReplaceAllString(r.Path, "{$1}")
				routes = append(routes, r.Method+" "+p)
			}
			var documented []string
			for p, item := range s.Paths {
				for m := range item {
					if slices.Contains(httpMethods, m) {
						documented = append(documented, strings.ToUpper(m)+" "+p)
					}
				}
			}
			slices.Sort(routes)
			slices.Sort(documented)
			if !slices.Equal(routes, documented) {
				t.Errorf("routes and openapi.yaml differ\nroutes:\n  %s\ndocumented:\n  %s",
					strings.Join(routes, "\n  "), strings.Join(documented, "\n  "))
			}

			r := e.do(t, request{method: http.MethodGet, target: "/openapi.yaml", noAuth: true})
			want(t, r, http.StatusOK)
			file, _ := os.ReadFile("openapi.yaml")
			if !bytes.Equal(r.Body, file) {
				t.Error("GET /openapi.yaml does not serve openapi.yaml")
			}
			if ct := r.Header.Get("Content-Type"); ct != "application/yaml" {
				t.Errorf("content type %q", ct)
			}
		})
	}
}

// TestOpenAPIRefs checks every $ref points at something in the document.
func TestOpenAPIRefs(t *testing.T) {
	data, err := os.ReadFile("openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if ref, ok := x.(string); ok && k == "$ref" {
					var at any = doc
					for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
						m, _ := at.(map[string]any)
						at = m[part]
					}
					if at == nil {
						t.Errorf("$ref %q points at nothing", ref)
					}
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(doc)
}

// TestOpenAPIResponses makes every documented status of every operation
// happen and checks the handler answers it as documented (env.do checks
// each response; 401 is covered for every route by TestAuth, 500 and 503
// by TestStoreFailure).
func TestOpenAPIResponses(t *testing.T) {
	s := loadSpec(t)
	e := newEnv(t, memory.New(memory.Options{}), withMetrics())
	want(t, e.put(t, bindingPath("mqtt", "c1"), `{"server":"n1"}`), http.StatusOK)
	big := `{"server":"` + strings.Repeat("x", 70000) + `"}`
	for i := range 20 { // something for a rebalance to move, at rate 1: still running at the second POST
		want(t, e.put(t, bindingPath("mqtt", fmt.Sprint("rb", i)), `{"server":"n1"}`), http.StatusOK)
	}
	calls := []request{
		{method: "GET", target: "/healthz"},
		{method: "GET", target: "/readyz"},
		{method: "GET", target: "/openapi.yaml"},
		{method: "GET", target: "/metrics"},
		{method: "GET", target: "/v1/backends"},
		{method: "GET", target: "/v1/whoami"},
		{method: "GET", target: "/v1/audit"},
		{method: "GET", target: "/v1/audit?limit=0"},
		// Before any drain: a drained server takes no part.
		{method: "GET", target: "/v1/backends/mqtt/rebalance"},
		{method: "DELETE", target: "/v1/backends/mqtt/rebalance"},
		{method: "POST", target: "/v1/backends/mqtt/rebalance?tolerance=2"},
		{method: "POST", target: "/v1/backends/nope/rebalance"},
		{method: "POST", target: "/v1/backends/mqtt/rebalance?rate=1"},
		{method: "POST", target: "/v1/backends/mqtt/rebalance?rate=1"},
		{method: "GET", target: "/v1/backends/mqtt/rebalance"},
		{method: "DELETE", target: "/v1/backends/mqtt/rebalance"},
		{method: "GET", target: "/v1/backends/mqtt"},
		{method: "GET", target: "/v1/backends/nope"},
		{method: "GET", target: "/v1/backends/mqtt/servers"},
		{method: "GET", target: "/v1/backends/nope/servers"},
		{method: "GET", target: "/v1/backends/mqtt/servers/n1"},
		{method: "GET", target: "/v1/backends/mqtt/servers/n9"},
		{method: "PUT", target: "/v1/backends/mqtt/servers/n1/drain"},
		{method: "PUT", target: "/v1/backends/mqtt/servers/n9/drain"},
		{method: "DELETE", target: "/v1/backends/mqtt/servers/n1/drain"},
		{method: "DELETE", target: "/v1/backends/mqtt/servers/n9/drain"},
		{method: "GET", target: "/v1/backends/mqtt/servers/n1/evacuate"},
		{method: "DELETE", target: "/v1/backends/mqtt/servers/n1/evacuate"},
		{method: "POST", target: "/v1/backends/mqtt/servers/n1/evacuate?rate=0"},
		{method: "POST", target: "/v1/backends/mqtt/servers/n9/evacuate"},
		{method: "POST", target: "/v1/backends/mqtt/servers/n1/evacuate?rate=1"},
		{method: "POST", target: "/v1/backends/mqtt/servers/n1/evacuate?rate=1"},
		{method: "GET", target: "/v1/backends/mqtt/servers/n1/evacuate"},
		{method: "DELETE", target: "/v1/backends/mqtt/servers/n1/evacuate"},
		{method: "GET", target: "/v1/backends/mqtt/bindings"},
		{method: "GET", target: "/v1/backends/mqtt/bindings?limit=0"},
		{method: "GET", target: "/v1/backends/nope/bindings"},
		{method: "DELETE", target: "/v1/backends/mqtt/bindings?server=n2"},
		{method: "DELETE", target: "/v1/backends/mqtt/bindings"},
		{method: "DELETE", target: "/v1/backends/nope/bindings?server=n2"},
		{method: "GET", target: "/v1/backends/mqtt/bindings/c1"},
		{method: "GET", target: "/v1/backends/mqtt/bindings/none"},
		{method: "PUT", target: "/v1/backends/mqtt/bindings/c2", body: `{"server":"n2"}`},
		{method: "PUT", target: "/v1/backends/mqtt/bindings/c2", body: `{"server":"zz"}`},
		{method: "PUT", target: "/v1/backends/nope/bindings/c2", body: `{"server":"n2"}`},
		{method: "PUT", target: "/v1/backends/mqtt/bindings/c2", body: big},
		{method: "DELETE", target: "/v1/backends/mqtt/bindings/c2"},
		{method: "DELETE", target: "/v1/backends/mqtt/bindings/c2"},
		{method: "GET", target: "/v1/backends/mqtt/placement/c1"},
		{method: "GET", target: "/v1/backends/mqtt/placement/a/b"},
		{method: "GET", target: "/v1/backends/mqtt/placement/" + strings.Repeat("x", 65536)},
		{method: "GET", target: "/v1/backends/mqtt/bindings/" + strings.Repeat("x", 65536)},
		{method: "DELETE", target: "/v1/backends/mqtt/bindings/" + strings.Repeat("x", 65536)},
		{method: "GET", target: "/v1/backends/nope/placement/c1"},
		{method: "GET", target: "/v1/backends/mqtt/export"},
		{method: "GET", target: "/v1/backends/mqtt/export?x=1"},
		{method: "GET", target: "/v1/backends/nope/export"},
		{method: "POST", target: "/v1/backends/mqtt/import", body: `{"client_id":"i1","server":"n1"}` + "\n"},
		{method: "POST", target: "/v1/backends/mqtt/import?mode=nope", body: "\n"},
		{method: "POST", target: "/v1/backends/nope/import", body: "\n"},
		{method: "POST", target: "/v1/backends/mqtt/import", body: strings.Repeat(`{"client_id":"i2","server":"n1"}`+"\n", 100)},
		{method: "GET", target: "/v1/readyz"},
	}
	// The guard (guard.go) answers every route: 403 for a foreign Host, and
	// 415 for a form content type on a state-changing one.
	fill := strings.NewReplacer("{backend}", "mqtt", "{server}", "n1", "{client_id}", "c9")
	for path, item := range s.Paths {
		for m := range item {
			if !slices.Contains(httpMethods, m) {
				continue
			}
			method, target := strings.ToUpper(m), fill.Replace(path)
			calls = append(calls, request{method: method, target: target, host: "rebind.example:8080"})
			if changesState(method) {
				calls = append(calls, request{method: method, target: target,
					header: http.Header{"Content-Type": {"text/plain;charset=UTF-8"}}})
			}
		}
	}
	defer api.SetMaxImportBytes(1000)()
	seen := map[string]bool{}
	for _, c := range calls {
		r := e.do(t, c) // fails on an undocumented status
		for tmpl, re := range specPaths {
			if re.MatchString(strings.SplitN(c.target, "?", 2)[0]) {
				seen[fmt.Sprintf("%s %s %d", strings.ToLower(c.method), tmpl, r.Code)] = true
			}
		}
	}
	for path, item := range s.Paths {
		for m := range item {
			if !slices.Contains(httpMethods, m) {
				continue
			}
			op, _ := s.operation(t, path, m)
			for code := range op.Responses {
				switch code {
				case "401", "403", "500", "503", "507": // 403: TestReadOnlyRole; 507: TestReadOnlyStore
					continue
				}
				if !seen[fmt.Sprintf("%s %s %s", m, path, code)] {
					t.Errorf("%s %s: documented status %s never produced", strings.ToUpper(m), path, code)
				}
			}
		}
	}
}
