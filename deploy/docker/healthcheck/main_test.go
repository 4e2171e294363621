package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" {
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `{"status":"unavailable"}`) // /readyz has no detail
			return
		}
		io.WriteString(w, `{"status":"ok"}`)
	}))
	defer srv.Close()

	var out strings.Builder
	if code := run([]string{srv.URL + "/healthz"}, &out); code != 0 {
		t.Errorf("/healthz 200: exit %d, %s", code, out.String())
	}
	out.Reset()
	if code := run([]string{srv.URL + "/readyz"}, &out); code != 1 || !strings.Contains(out.String(), `503 Service Unavailable {"status":"unavailable"}`) {
		t.Errorf("/readyz 503: exit %d, %q", code, out.String())
	}
	closed := srv.URL
	srv.Close()
	if code := run([]string{closed + "/healthz"}, &out); code != 1 {
		t.Errorf("nothing listening: exit %d", code)
	}
	if code := run([]string{"a", "b"}, &out); code != 2 {
		t.Errorf("two arguments: exit %d", code)
	}
}
