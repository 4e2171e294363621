package api_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stickyd/stickyd/api"
	"github.com/stickyd/stickyd/config"
	"github.com/stickyd/stickyd/store/memory"
)

func changesState(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return false
	}
	return true
}

func (e *env) drainingInStore(t *testing.T, server string) bool {
	t.Helper()
	d, err := e.store.Draining(context.Background(), "mqtt")
	if err != nil {
		t.Fatal(err)
	}
	return d[server]
}

// TestGuardHost: without a token the Host header must name loopback, on
// every route, so a DNS-rebinding page (Host: its own name) gets nothing.
func TestGuardHost(t *testing.T) {
	for _, tc := range []struct {
		host string
		ok   bool
	}{
		{"127.0.0.1:8080", true}, {"127.0.0.1", true}, {"127.9.8.7:1", true},
		{"localhost:8080", true}, {"LocalHost", true}, {"[::1]:8080", true}, {"[::1]", true},
		{"evil.example", false}, {"evil.example:8080", false}, {"app.localhost:8080", false},
		{"localhost.evil.example", false}, {"127.0.0.1.nip.io:8080", false}, {"10.0.0.1:8080", false},
		{"0.0.0.0:8080", false}, {"[::ffff:10.0.0.1]:8080", false}, {"[fe80::1]:8080", false},
	} {
		t.Run(tc.host, func(t *testing.T) {
			e := newEnv(t, memory.New(memory.Options{}))
			for _, target := range []string{"/v1/backends", "/healthz", "/dashboard/"} {
				r := e.do(t, request{method: http.MethodGet, target: target, host: tc.host})
				if tc.ok {
					if r.Code != http.StatusOK {
						t.Errorf("GET %s Host %q: %d %s", target, tc.host, r.Code, r.Body)
					}
					continue
				}
				want(t, r, http.StatusForbidden, "Host", "not a loopback")
			}
			r := e.do(t, request{method: http.MethodPut, target: "/v1/backends/mqtt/servers/n1/drain", host: tc.host})
			if got := e.drainingInStore(t, "n1"); got != tc.ok {
				t.Errorf("PUT drain with Host %q: %d, draining %v", tc.host, r.Code, got)
			}
		})
	}
}

// TestGuardHostWithToken: a token lifts the Host rule only where it has
// to (a listener beyond loopback, reached by any name); on loopback the
// rule stays, so a rebinding page cannot read even the open routes.
func TestGuardHostWithToken(t *testing.T) {
	const tok = "guard-token-0123456789"
	for _, tc := range []struct {
		listen string
		code   int
	}{{"127.0.0.1:8080", http.StatusForbidden}, {"0.0.0.0:8080", http.StatusOK}} {
		t.Run(tc.listen, func(t *testing.T) {
			e := newEnv(t, memory.New(memory.Options{}), withToken(tok),
				func(c *config.Config, _ *api.Options) { c.APIListen = tc.listen })
			for _, target := range []string{"/v1/backends", "/healthz"} {
				want(t, e.do(t, request{method: http.MethodGet, target: target, host: "stickyd.example:8080"}), tc.code)
			}
		})
	}
}

// TestGuardCrossSite: without a token, a state-changing request that a
// foreign page could have sent is refused and changes nothing; what curl,
// stickyd ctl and the same-origin dashboard send passes.
func TestGuardCrossSite(t *testing.T) {
	const drain = "/v1/backends/mqtt/servers/n1/drain"
	h := func(kv ...string) http.Header {
		out := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			out.Set(kv[i], kv[i+1])
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		method string
		header http.Header
		tls    bool
		code   int
		reason string
	}{
		{"curl -X PUT", "PUT", nil, false, http.StatusOK, ""},
		{"json body type", "PUT", h("Content-Type", "application/json"), false, http.StatusOK, ""},
		{"dashboard fetch", "PUT", h("Origin", "http://127.0.0.1:8080", "Sec-Fetch-Site", "same-origin"), false, http.StatusOK, ""},
		{"typed url", "PUT", h("Sec-Fetch-Site", "none"), false, http.StatusOK, ""},
		{"origin with a path", "PUT", h("Origin", "http://127.0.0.1:8080/"), false, http.StatusForbidden, "Origin"},
		{"https same origin", "PUT", h("Origin", "https://127.0.0.1:8080"), true, http.StatusOK, ""},
		{"cross-site", "PUT", h("Sec-Fetch-Site", "cross-site"), false, http.StatusForbidden, "Sec-Fetch-Site"},
		{"same-site", "PUT", h("Sec-Fetch-Site", "same-site"), false, http.StatusForbidden, "Sec-Fetch-Site"},
		{"other port", "PUT", h("Origin", "http://127.0.0.1:9999"), false, http.StatusForbidden, "Origin"},
		{"other name", "PUT", h("Origin", "http://localhost:8080"), false, http.StatusForbidden, "Origin"},
		{"foreign site", "DELETE", h("Origin", "https://evil.example"), false, http.StatusForbidden, "Origin"},
		{"null origin", "PUT", h("Origin", "null"), false, http.StatusForbidden, "Origin"},
		{"scheme differs", "PUT", h("Origin", "https://127.0.0.1:8080"), false, http.StatusForbidden, "Origin"},
		{"text/plain", "PUT", h("Content-Type", "text/plain"), false, http.StatusUnsupportedMediaType, "text/plain"},
		{"text/plain params", "PUT", h("Content-Type", "Text/Plain ; charset=UTF-8"), false, http.StatusUnsupportedMediaType, "text/plain"},
		{"urlencoded", "PUT", h("Content-Type", "application/x-www-form-urlencoded"), false, http.StatusUnsupportedMediaType, "application/x-www-form-urlencoded"},
		{"multipart", "PUT", h("Content-Type", "multipart/form-data; boundary=x"), false, http.StatusUnsupportedMediaType, "multipart/form-data"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, memory.New(memory.Options{}))
			if tc.method == http.MethodDelete {
				if err := e.store.SetDraining(context.Background(), "mqtt", "n1", true); err != nil {
					t.Fatal(err)
				}
			}
			req := httptest.NewRequest(tc.method, drain, nil)
			req.Host = "127.0.0.1:8080"
			if tc.tls {
				req.TLS = &tls.ConnectionState{}
			}
			for k, v := range tc.header {
				req.Header[k] = v
			}
			rec := httptest.NewRecorder()
			e.api.Handler().ServeHTTP(rec, req)
			r := response{Code: rec.Code, Header: rec.Header(), Body: rec.Body.Bytes()}
			if tc.code == http.StatusOK {
				want(t, r, http.StatusOK)
			} else {
				want(t, r, tc.code, "refused", tc.reason)
			}
			changed := e.drainingInStore(t, "n1") != (tc.method == http.MethodDelete)
			if changed != (tc.code == http.StatusOK) {
				t.Errorf("answered %d, state changed: %v", r.Code, changed)
			}
		})
	}

	t.Run("reads stay open", func(t *testing.T) {
		// A foreign page cannot read the answer without CORS headers.
		e := newEnv(t, memory.New(memory.Options{}))
		r := e.do(t, request{method: "GET", target: "/v1/backends", header: h("Sec-Fetch-Site", "cross-site", "Origin", "https://evil.example")})
		want(t, r, http.StatusOK)
		if r.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("CORS header %q", r.Header.Get("Access-Control-Allow-Origin"))
		}
	})
	t.Run("no preflight", func(t *testing.T) {
		// echo answers OPTIONS itself (204, Allow) but grants no CORS, so
		// the browser never sends the PUT.
		e := newEnv(t, memory.New(memory.Options{}))
		r := e.do(t, request{method: "OPTIONS", target: drain, header: h("Origin", "https://evil.example",
			"Access-Control-Request-Method", "PUT")})
		if r.Header.Get("Access-Control-Allow-Origin") != "" || r.Header.Get("Access-Control-Allow-Methods") != "" || e.drainingInStore(t, "n1") {
			t.Errorf("preflight: %d %v", r.Code, r.Header)
		}
	})
	t.Run("token lifts the browser rules", func(t *testing.T) {
		// A page cannot send the Authorization header cross-site.
		e := newEnv(t, memory.New(memory.Options{}), withToken("guard-token-0123456789"))
		r := e.do(t, request{method: "PUT", target: drain, header: h("Sec-Fetch-Site", "cross-site",
			"Origin", "https://ops.example", "Content-Type", "text/plain")})
		want(t, r, http.StatusOK)
		if !e.drainingInStore(t, "n1") {
			t.Error("not draining")
		}
	})
	t.Run("form body", func(t *testing.T) {
		e := newEnv(t, memory.New(memory.Options{}))
		r := e.do(t, request{method: "PUT", target: bindingPath("mqtt", "c1"), body: `{"server":"n1"}`,
			header: h("Content-Type", "application/x-www-form-urlencoded")})
		want(t, r, http.StatusUnsupportedMediaType, "application/json")
		if _, err := e.store.Get(context.Background(), "mqtt", "c1"); err == nil {
			t.Error("the refused PUT created a binding")
		}
		r = e.do(t, request{method: "POST", target: "/v1/backends/mqtt/servers/n1/evacuate",
			header: h("Content-Type", "text/plain"), body: "x"})
		want(t, r, http.StatusUnsupportedMediaType)
		want(t, e.get(t, "/v1/backends/mqtt/servers/n1/evacuate"), http.StatusNotFound)
	})
}

// TestReadyzDetail: the open /readyz says only ok/unavailable (the store
// error can name the Redis address); /v1/readyz, behind auth, says why.
func TestReadyzDetail(t *testing.T) {
	e := newEnv(t, failingStore{memory.New(memory.Options{})}, withToken("ready-token-0123456789"))
	r := e.do(t, request{method: "GET", target: "/readyz", noAuth: true})
	if got := string(bytes.TrimSpace(r.Body)); r.Code != http.StatusServiceUnavailable || got != `{"status":"unavailable"}` {
		t.Errorf("/readyz: %d %s", r.Code, got)
	}
	want(t, e.do(t, request{method: "GET", target: "/v1/readyz", noAuth: true}), http.StatusUnauthorized)
	r = e.get(t, "/v1/readyz")
	if got := string(bytes.TrimSpace(r.Body)); r.Code != http.StatusServiceUnavailable || got != `{"status":"unavailable","error":"store: connection refused (test)"}` {
		t.Errorf("/v1/readyz: %d %s", r.Code, got)
	}
	ok := newEnv(t, memory.New(memory.Options{}))
	for _, p := range []string{"/readyz", "/v1/readyz"} {
		r := ok.get(t, p)
		want(t, r, http.StatusOK)
		if got := strings.TrimSpace(string(r.Body)); got != `{"status":"ok"}` {
			t.Errorf("%s: %s", p, got)
		}
	}
}
