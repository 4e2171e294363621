package ctl_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// ctl bindings export then import into another API: the same bindings,
// odd ids included; a second import skips them all.
func TestBindingsExportImport(t *testing.T) {
	a, b := newAPI(t, envOpt{token: "tok"}), newAPI(t, envOpt{})
	for i, id := range oddIDs {
		a.put(t, id, []string{"n1", "n2"}[i%2], i%3 == 0)
	}
	file := filepath.Join(t.TempDir(), "bindings.ndjson")
	r := a.run(t, "bindings", "export", "--out", file).ok(t)
	if !strings.Contains(r.stderr, "Wrote ") {
		t.Errorf("stderr: %s", r.stderr)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(data), "\n"); n != len(oddIDs) {
		t.Fatalf("export has %d lines, want %d", n, len(oddIDs))
	}
	if out := a.run(t, "bindings", "export").ok(t).stdout; out != string(data) {
		t.Fatalf("export to stdout differs from the file")
	}
	r = b.run(t, "bindings", "import", file).ok(t)
	if want := "Imported 13 binding(s) into backend mqtt, skipped 0 already bound.\n"; r.stdout != want {
		t.Fatalf("stdout %q, want %q", r.stdout, want)
	}
	for i, id := range oddIDs {
		got, ok := b.get(t, id)
		if !ok || got.Server != []string{"n1", "n2"}[i%2] || got.Pinned != (i%3 == 0) {
			t.Errorf("%q: %+v %v", id, got, ok)
		}
	}
	r = b.run(t, "bindings", "import", "--mode", "claim", file).ok(t)
	if want := "Imported 0 binding(s) into backend mqtt, skipped 13 already bound.\n"; r.stdout != want {
		t.Fatalf("stdout %q, want %q", r.stdout, want)
	}
	bad := filepath.Join(t.TempDir(), "bad.ndjson")
	if err := os.WriteFile(bad, []byte(`{"client_id":"x","server":"n9"}`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r = b.run(t, "bindings", "import", bad)
	r.fails(t, 1, "1 line(s) not imported")
	if !strings.Contains(r.stdout, `error: line 1: unknown server "n9"`) {
		t.Errorf("stdout: %s", r.stdout)
	}
	b.run(t, "bindings", "import", "--mode", "merge", file).fails(t, 2, "--mode must be claim or replace")
	b.run(t, "bindings", "import").fails(t, 2, "missing file to import")
}
