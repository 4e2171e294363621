package api_test

import (
	"encoding/base64"
	"encoding/json"
	"flag"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stickyd/stickyd/agent"
	"github.com/stickyd/stickyd/api"
	"github.com/stickyd/stickyd/store"
	"github.com/stickyd/stickyd/store/memory"
)

var roundTrips atomic.Int64

// FuzzClientIDPath drives the client-id path decoding (the router on the
// escaped path, then param's percent-decoding) with arbitrary request
// paths: no answer is a 5xx, and an id written through a path is read back
// through the same path as exactly the bytes it decodes to.
func FuzzClientIDPath(f *testing.F) {
	for _, seed := range []string{"dev-1", "a%2Fb", "a%252Fb", "a/b", "100%", "%zz", "%", "%00%ff", "ünï", "..", "%2e%2E", "a?b", "a#b", "", "%2F"} {
		f.Add(seed)
	}
	cfg := testConfig(f)
	st := memory.New(memory.Options{})
	f.Cleanup(func() { _ = st.Close() })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ag, err := agent.New(cfg, st, log, agent.Options{})
	if err != nil {
		f.Fatal(err)
	}
	srv, err := api.New(api.Options{Config: cfg, Store: st, Agent: ag, Logger: log})
	if err != nil {
		f.Fatal(err)
	}
	h := srv.Handler()
	f.Cleanup(func() {
		// The seeds that name an id must have gone the whole way (when
		// fuzzing, inputs run in worker processes: nothing to count here).
		if fz := flag.Lookup("test.fuzz"); (fz == nil || fz.Value.String() == "") && roundTrips.Load() == 0 {
			f.Error("no id was written and read back: the fuzz checks nothing")
		}
	})
	do := func(t *testing.T, method, target, body string) (int, []byte) {
		// As net/http parses a request line: an unparsable URI never
		// reaches the handler.
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return 0, nil
		}
		req := httptest.NewRequest(method, "/", strings.NewReader(body))
		req.URL, req.RequestURI = u, target
		req.Host = "127.0.0.1:8080" // the guard refuses httptest's example.com
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%s %q: %d %s", method, target, rec.Code, rec.Body)
		}
		return rec.Code, rec.Body.Bytes()
	}
	f.Fuzz(func(t *testing.T, raw string) {
		target := "/v1/backends/mqtt/bindings/" + raw
		code, _ := do(t, http.MethodPut, target, `{"server":"n2"}`)
		if code != http.StatusOK {
			return
		}
		id, err := url.PathUnescape(strings.SplitN(raw, "?", 2)[0])
		if err != nil || id == "" || len(id) > store.MaxClientIDLen {
			t.Fatalf("PUT %q: accepted an id it should refuse (%q, %v)", target, id, err)
		}
		code, body := do(t, http.MethodGet, target, "")
		var b binding
		if code != http.StatusOK || json.Unmarshal(body, &b) != nil {
			t.Fatalf("GET %q after PUT: %d %s", target, code, body)
		}
		if got, _ := base64.StdEncoding.DecodeString(b.ClientIDB64); string(got) != id || b.Server != "n2" {
			t.Fatalf("GET %q: id %q server %q, want %q on n2", target, got, b.Server, id)
		}
		// The same id by its canonical escaping names the same binding.
		if code, body := do(t, http.MethodGet, bindingPath("mqtt", id), ""); code != http.StatusOK {
			t.Fatalf("GET canonical path of %q: %d %s", id, code, body)
		}
		if code, _ := do(t, http.MethodDelete, target, ""); code != http.StatusNoContent {
			t.Fatalf("DELETE %q: %d", target, code)
		}
		roundTrips.Add(1)
	})
}
