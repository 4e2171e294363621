package agent

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stickyd/stickyd/config"
	"github.com/stickyd/stickyd/store"
	"github.com/stickyd/stickyd/store/memory"
)

// recordingClearer records the Runtime API clears it is asked for.
type recordingClearer struct {
	mu    sync.Mutex
	calls []string
}

func (r *recordingClearer) add(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, s)
}

func (r *recordingClearer) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.calls)
}

func (r *recordingClearer) ClearTableKey(_ context.Context, backend string, key []byte) error {
	r.add("key " + backend + " " + string(key))
	return nil
}

func (r *recordingClearer) ClearTableServer(_ context.Context, backend string, id int) error {
	r.add(fmt.Sprintf("server %s %d", backend, id))
	return nil
}

func (r *recordingClearer) ClearTable(_ context.Context, backend string) error {
	r.add("all " + backend)
	return nil
}

func coherenceCfg() *config.Config {
	return &config.Config{Backends: []config.Backend{{Name: "mqtt", Servers: []config.Server{{Name: "n1"}, {Name: "n2"}}}}}
}

func TestCoherenceClearsAfterEveryChange(t *testing.T) {
	ctx := context.Background()
	rc := &recordingClearer{}
	co := NewCoherence(coherenceCfg(), rc, slog.New(slog.NewTextHandler(io.Discard, nil)))
	st := co.Wrap(memory.New(memory.Options{}))
	steps := []struct {
		name string
		do   func() error
		want []string
	}{
		{"claim clears nothing", func() error { _, err := st.GetOrClaim(ctx, "mqtt", "a", "n1", time.Minute); return err }, nil},
		{"put", func() error { return st.Put(ctx, store.Binding{Backend: "mqtt", ClientID: "b", Server: "n2"}) }, []string{"key mqtt b"}},
		{"move that lost clears nothing", func() error { _, err := st.Move(ctx, "mqtt", "a", "n2", "n1", time.Minute); return err }, nil},
		{"move", func() error { _, err := st.Move(ctx, "mqtt", "a", "n1", "n2", time.Minute); return err }, []string{"key mqtt a"}},
		{"delete", func() error { return st.Delete(ctx, "mqtt", "b") }, []string{"key mqtt b"}},
		{"failed delete clears nothing", func() error { _ = st.Delete(ctx, "mqtt", "nobody"); return nil }, nil},
		{"delete by server", func() error { _, err := st.DeleteByServer(ctx, "mqtt", "n2"); return err }, []string{"server mqtt 2"}},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			before := len(rc.got())
			if err := s.do(); err != nil {
				t.Fatal(err)
			}
			if got := rc.got()[before:]; !slices.Equal(got, s.want) {
				t.Fatalf("clears %q, want %q", got, s.want)
			}
		})
	}
}

func TestCoherenceForgetsRemoteChanges(t *testing.T) {
	rc := &recordingClearer{}
	co := NewCoherence(coherenceCfg(), rc, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	co.Forget("mqtt", "x")
	co.Forget("other", "y") // not a configured backend: ignored
	go co.Run(ctx)
	waitFor(t, func() bool { return slices.Contains(rc.got(), "key mqtt x") })
	// A full queue loses keys: the whole table is cleared instead.
	cancel()
	time.Sleep(10 * time.Millisecond)
	rc2 := &recordingClearer{}
	co2 := NewCoherence(coherenceCfg(), rc2, slog.New(slog.NewTextHandler(io.Discard, nil)))
	for i := 0; i <= remoteQueue; i++ {
		co2.Forget("mqtt", fmt.Sprint(i))
	}
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	go co2.Run(ctx2)
	waitFor(t, func() bool { return slices.Contains(rc2.got(), "all mqtt") })
	if n := len(rc2.got()); n > 3 {
		t.Fatalf("%d clears after an overflow, want the key read first and one whole-table clear: %s", n, strings.Join(rc2.got()[:3], ", "))
	}
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if ok() {
			return
		}
	}
	t.Fatal("condition not met after 5s")
}
