package agent

import (
	"io"
	"log/slog"
	"testing"

	"github.com/stickyd/stickyd/config"
	"github.com/stickyd/stickyd/store"
)

// key: cert_cn binds the certificate's CN, whatever client id or username
// the CONNECT carries; without a CN there is no key.
func TestCertCNKey(t *testing.T) {
	for _, m := range []decideMode{{"Decide", false}, {"TryDecide", true}} {
		t.Run(m.name, func(t *testing.T) {
			cfg := testConfig(1, 1)
			cfg.Backends[0].Key = config.KeyCertCN
			f := newFake()
			var st store.Store = f
			if m.inline {
				st = &inlineFake{fakeStore: f}
			}
			a, err := New(cfg, st, slog.New(slog.NewTextHandler(io.Discard, nil)), Options{})
			if err != nil {
				t.Fatal(err)
			}
			q := query("cid", true, true)
			q.Username = []byte("alice")
			if d := m.decide(a, q); d.Outcome != OutcomeNoKey || d.Server != "" {
				t.Fatalf("no CN: %+v", d)
			}
			want := a.Backend("mqtt").Place([]byte("device-7"))
			for _, cid := range []string{"cid", "another-id", ""} {
				q := query(cid, true, true)
				q.CertCN = []byte("device-7")
				if d := m.decide(a, q); d.Server != want {
					t.Fatalf("client id %q: %+v, want %s", cid, d, want)
				}
			}
			if _, ok := f.m["mqtt\x00device-7"]; !ok || len(f.m) != 1 {
				t.Fatalf("bindings %v: want exactly the CN's", f.m)
			}
		})
	}
}
