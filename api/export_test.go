package api_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stickyd/stickyd/internal/testenv"
	"github.com/stickyd/stickyd/store"
	"github.com/stickyd/stickyd/store/memory"
	"github.com/stickyd/stickyd/store/redis"
)

type exported struct {
	ClientID    string `json:"client_id"`
	ClientIDB64 string `json:"client_id_b64"`
	Server      string `json:"server"`
	TTLSeconds  int64  `json:"ttl_seconds"`
	Pinned      bool   `json:"pinned"`
}

// allBindings reads a backend's bindings straight from the store.
func allBindings(t *testing.T, st store.Store, backend string) map[string]store.Binding {
	t.Helper()
	out := map[string]store.Binding{}
	opts := store.ListOptions{Limit: store.MaxListLimit}
	for range 10000 {
		p, err := st.List(context.Background(), backend, opts)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range p.Items {
			out[b.ClientID] = b
		}
		if p.NextCursor == "" {
			return out
		}
		opts.Cursor = p.NextCursor
	}
	t.Fatal("List never ended")
	return nil
}

// Export from an instance on Redis, import into a fresh one on memory:
// every binding comes over identical, odd ids included.
func TestExportRedisImportMemory(t *testing.T) {
	r := testenv.StartRedis(t)
	rst, err := redis.New(context.Background(), redis.Options{URL: r.URL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rst.Close() })
	src := newEnv(t, rst)
	ctx := context.Background()
	odd := []store.Binding{
		{ClientID: "bin\x00\xff\x01\n", Server: "n1", TTL: time.Hour},
		{ClientID: "a/b", Server: "n2", TTL: time.Hour, Pinned: true},
		{ClientID: "100%", Server: "n3"}, // no expiry
		{ClientID: "%2F", Server: "n1", TTL: time.Hour},
		{ClientID: strings.Repeat("x", store.MaxClientIDLen), Server: "n2", TTL: time.Hour},
	}
	for i := range 2500 { // more than one List page
		odd = append(odd, store.Binding{ClientID: fmt.Sprintf("c-%05d", i), Server: []string{"n1", "n2", "n3"}[i%3], TTL: 2 * time.Hour})
	}
	for _, b := range odd {
		b.Backend = "mqtt"
		if err := rst.Put(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	res := src.get(t, "/v1/backends/mqtt/export")
	want(t, res, http.StatusOK)
	if ct := res.Header.Get("Content-Type"); ct != "application/x-ndjson" {
		t.Fatalf("content type %q", ct)
	}
	lines := 0
	sc := bufio.NewScanner(bytes.NewReader(res.Body))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var x exported
		strictDecode(t, sc.Bytes(), &x)
		if id, _ := base64.StdEncoding.DecodeString(x.ClientIDB64); len(id) == 0 {
			t.Fatalf("line %d without client_id_b64", lines+1)
		}
		lines++
	}
	if lines != len(odd) {
		t.Fatalf("export has %d lines, want %d", lines, len(odd))
	}

	mst := memory.New(memory.Options{})
	t.Cleanup(func() { mst.Close() })
	dst := newEnv(t, mst)
	imp := dst.do(t, request{method: http.MethodPost, target: "/v1/backends/mqtt/import", body: string(res.Body)})
	want(t, imp, http.StatusOK, fmt.Sprintf(`{"imported":%d,"skipped":0,"errors":[]}`, len(odd)))

	from, to := allBindings(t, rst, "mqtt"), allBindings(t, mst, "mqtt")
	if len(from) != len(odd) || len(to) != len(odd) {
		t.Fatalf("redis holds %d, memory %d, want %d", len(from), len(to), len(odd))
	}
	for id, a := range from {
		b, ok := to[id]
		switch {
		case !ok:
			t.Fatalf("%q missing after import", trunc([]byte(id)))
		case a.Server != b.Server || a.Pinned != b.Pinned || (a.TTL == 0) != (b.TTL == 0):
			t.Fatalf("%q: redis %+v, memory %+v", trunc([]byte(id)), a, b)
		case a.TTL-b.TTL > 5*time.Second || b.TTL-a.TTL > 5*time.Second:
			t.Fatalf("%q: ttl %s on redis, %s on memory", trunc([]byte(id)), a.TTL, b.TTL)
		}
	}

	// claim never overwrites; replace does.
	if err := mst.Put(ctx, store.Binding{Backend: "mqtt", ClientID: "a/b", Server: "n3"}); err != nil {
		t.Fatal(err)
	}
	imp = dst.do(t, request{method: http.MethodPost, target: "/v1/backends/mqtt/import?mode=claim", body: string(res.Body)})
	want(t, imp, http.StatusOK, fmt.Sprintf(`{"imported":0,"skipped":%d,"errors":[]}`, len(odd)))
	if b, _ := mst.Get(ctx, "mqtt", "a/b"); b.Server != "n3" {
		t.Fatalf("claim overwrote a/b: %+v", b)
	}
	imp = dst.do(t, request{method: http.MethodPost, target: "/v1/backends/mqtt/import?mode=replace", body: string(res.Body)})
	want(t, imp, http.StatusOK, fmt.Sprintf(`{"imported":%d,"skipped":0,"errors":[]}`, len(odd)))
	if b, _ := mst.Get(ctx, "mqtt", "a/b"); b.Server != "n2" || !b.Pinned {
		t.Fatalf("replace did not restore a/b: %+v", b)
	}
}

func TestImportReportsBadLines(t *testing.T) {
	e := newEnv(t, memory.New(memory.Options{}))
	body := strings.Join([]string{
		`{"client_id":"ok1","server":"n1","ttl_seconds":60}`,
		`{"client_id":"bad","server":"n9"}`,
		`{"client_id_b64":"!!","server":"n1"}`,
		`{"server":"n1"}`,
		`not json`,
		`{"client_id":"neg","server":"n1","ttl_seconds":-1}`,
		``,
		`{"client_id_b64":"` + base64.StdEncoding.EncodeToString([]byte("ok\x00")) + `","server":"n2","pinned":true}`,
	}, "\n")
	r := e.do(t, request{method: http.MethodPost, target: "/v1/backends/mqtt/import", body: body})
	want(t, r, http.StatusOK)
	var got struct {
		Imported, Skipped int
		Errors            []string
	}
	if err := json.Unmarshal(r.Body, &got); err != nil {
		t.Fatal(err)
	}
	if got.Imported != 2 || got.Skipped != 0 || len(got.Errors) != 5 {
		t.Fatalf("got %+v", got)
	}
	for i, w := range []string{`line 2: unknown server "n9"`, "line 3: client_id_b64:", "line 4: client id is empty", "line 5: bad JSON", "line 6: ttl_seconds must be"} {
		if !strings.HasPrefix(got.Errors[i], w) {
			t.Errorf("error %d: %q, want prefix %q", i, got.Errors[i], w)
		}
	}
	b, err := e.store.Get(context.Background(), "mqtt", "ok\x00")
	if err != nil || b.Server != "n2" || !b.Pinned || b.TTL <= 0 {
		t.Fatalf("ok\\x00: %+v %v", b, err)
	}
}
