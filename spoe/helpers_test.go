package spoe

import (
	"context"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stickyd/stickyd/agent"
	"github.com/stickyd/stickyd/config"
	"github.com/stickyd/stickyd/store/memory"
)

// testConfig has one backend, mqtt, with servers n1 and n2.
func testConfig() config.Config {
	cfg := config.Default()
	cfg.Backends = []config.Backend{{Name: "mqtt", Key: config.KeyClientID, Servers: []config.Server{
		{Name: "n1", Address: "127.0.0.1:1883", Weight: 1}, {Name: "n2", Address: "127.0.0.1:1884", Weight: 1},
	}}}
	return cfg
}

// newAgent is a real agent on the memory store over testConfig.
func newAgent(tb testing.TB) *agent.Agent {
	tb.Helper()
	cfg := testConfig()
	st := memory.New(memory.Options{})
	tb.Cleanup(func() { _ = st.Close() })
	a, err := agent.New(&cfg, st, slog.New(slog.NewTextHandler(io.Discard, nil)), agent.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	return a
}

// realBackends gives fakes the Backend half of Decider: a real agent's,
// which never writes to its store (so its sweeper never starts).
type realBackends struct{}

var backendsAgent = sync.OnceValue(func() *agent.Agent {
	cfg := testConfig()
	a, err := agent.New(&cfg, memory.New(memory.Options{}), slog.New(slog.NewTextHandler(io.Discard, nil)), agent.Options{})
	if err != nil {
		panic(err)
	}
	return a
})

func (realBackends) Backend(name string) *agent.Backend { return backendsAgent().Backend(name) }

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

// startServerLim starts a server within lim on a loopback port; it is shut
// down at the end of the test.
func startServerLim(t *testing.T, d Decider, lim Limits) (*Server, string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(d, discard, lim)
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return s, l.Addr().String()
}

// startServerMax is startServerLim with the agent's frame-size cap.
func startServerMax(t *testing.T, d Decider, maxFrame int) (*Server, string) {
	t.Helper()
	return startServerLim(t, d, Limits{MaxFrameSize: maxFrame})
}

func dialRaw(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
