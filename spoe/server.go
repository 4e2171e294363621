// Package spoe is the SPOE adapter: it serves HAProxy's SPOP connections,
// turns each stickyd message into an agent.Query and answers with the
// server the agent chose. It holds no routing logic; the frame codec is
// internal/spop.
package spoe

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/stickyd/stickyd/agent"
	"github.com/stickyd/stickyd/internal/ratelog"
)

// Names shared by the generated HAProxy configuration and the adapter.
const (
	// MessageName prefixes the SPOE messages carrying one CONNECT: the
	// generated configuration has one per backend, "stickyd-connect-<backend>".
	MessageName = "stickyd-connect"
	// VarPrefix is the SPOE var-prefix; variables read sess.stickyd.*.
	VarPrefix = "stickyd"
	// VarServer is the variable the agent sets: sess.stickyd.server.
	VarServer = "server"

	argBackend       = "backend"
	argClientID      = "client_id"
	argUsername      = "username"
	argCertCN        = "cert_cn"
	argSessionExpiry = "session_expiry"
	argUpPrefix      = "up_"
	// argSeen is the server HAProxy's own tables hold for the client (its
	// HAProxy id, the position in the backend from 1; 0 for none).
	argSeen = "seen"
)

// Decider is what the adapter needs from the agent (*agent.Agent).
type Decider interface {
	// Decide answers q; it may wait on the store.
	Decide(ctx context.Context, q *agent.Query) agent.Decision
	// TryDecide answers q without waiting on I/O (the memory store, a warm
	// Redis cache), or returns false having done nothing. Such NOTIFY
	// frames are answered on the connection's own goroutine, with no
	// hand-off, and the ACKs of frames that arrived together leave in one
	// write.
	TryDecide(q *agent.Query) (agent.Decision, bool)
	// Backend resolves a backend for its server indexes (the up_<server>
	// arguments); nil for an unknown backend.
	Backend(name string) *agent.Backend
}

// Stats is a snapshot of what the adapter saw since start.
type Stats struct {
	Connections  int64  // open now
	Accepted     uint64 // connections accepted
	Refused      uint64 // connections closed at once: MaxConnections were open
	Frames       uint64 // valid frames passed to the library
	BadFrames    uint64 // connections closed for a bad frame
	Panics       uint64 // panics recovered
	Messages     uint64 // stickyd-connect messages handled
	BadMessages  uint64 // messages with missing or mistyped args
	HealthChecks uint64
	// Connections closed by a deadline: no whole HELLO in time, a frame
	// begun and not finished in time, idle past IdleTimeout, a write not
	// taken in time.
	HelloTimeouts, FrameTimeouts, IdleTimeouts, WriteTimeouts uint64
}

// counters are the live values behind Stats.
type counters struct {
	connections                                                              atomic.Int64
	accepted, frames, badFrames, panics, messages, badMessages, healthChecks atomic.Uint64
	refused, helloTimeouts, frameTimeouts, idleTimeouts, writeTimeouts       atomic.Uint64
}

// Stats returns the counters since start.
func (s *Server) Stats() Stats {
	c := &s.counters
	return Stats{
		Connections: c.connections.Load(), Accepted: c.accepted.Load(), Refused: c.refused.Load(), Frames: c.frames.Load(),
		BadFrames: c.badFrames.Load(), Panics: c.panics.Load(), Messages: c.messages.Load(),
		BadMessages: c.badMessages.Load(), HealthChecks: c.healthChecks.Load(),
		HelloTimeouts: c.helloTimeouts.Load(), FrameTimeouts: c.frameTimeouts.Load(),
		IdleTimeouts: c.idleTimeouts.Load(), WriteTimeouts: c.writeTimeouts.Load(),
	}
}

// Server is an SPOE agent. negasus/haproxy-spoe-go v1.0.7 decodes the
// frames HAProxy sends; the rest is ours, for the guard rails that library
// lacks and for speed: the accept and frame loops with connection tracking,
// every frame validated (length first) before the library reads it, panics
// recovered, the agent's frames encoded here (only string values), the
// bounds of Limits, and a graceful shutdown that lets in-flight frames
// finish.
type Server struct {
	decider  Decider
	log      *slog.Logger
	lim      Limits
	counters counters
	refusals *ratelog.Logger // refused connections
	stalls   *ratelog.Logger // deadlines passed mid-exchange

	ctx    context.Context
	cancel context.CancelFunc

	workers workers

	mu       sync.Mutex
	listener net.Listener
	conns    map[*guardConn]struct{}
	closing  bool
	wg       sync.WaitGroup
}

// NewServer returns a server handing messages to d, within lim (zero
// fields take their defaults).
func NewServer(d Decider, log *slog.Logger, lim Limits) *Server {
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{
		decider: d, log: log, lim: lim.withDefaults(),
		refusals: ratelog.New(log, ratelog.DefaultEvery), stalls: ratelog.New(log, ratelog.DefaultEvery),
		ctx: ctx, cancel: cancel,
		conns:   map[*guardConn]struct{}{},
		workers: workers{work: make(chan func()), done: ctx.Done()},
	}
}

// Serve accepts connections until Shutdown; it then returns nil.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return errors.New("spoe: server is shut down")
	}
	s.listener = l
	s.mu.Unlock()
	var delay time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if s.isClosing() {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				// Out of descriptors during a reload burst: back off, keep serving.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.log.Warn("spoe: accept failed; retrying", "err", err, "in", delay)
				time.Sleep(delay)
				continue
			}
			return fmt.Errorf("spoe: accept: %w", err)
		}
		delay = 0
		g := &guardConn{Conn: c, srv: s}
		switch s.track(g, true) {
		case refused:
			s.refuse(c)
			continue
		case closing:
			_ = c.Close()
			return nil
		}
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetNoDelay(true)
		}
		g.init()
		s.counters.accepted.Add(1)
		s.wg.Add(1)
		go s.handleConn(g)
	}
}

func (s *Server) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

type trackResult int

const (
	tracked trackResult = iota
	refused             // MaxConnections are open
	closing             // the server is shutting down
)

func (s *Server) track(g *guardConn, add bool) trackResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		switch {
		case s.closing:
			return closing
		case len(s.conns) >= s.lim.MaxConnections:
			return refused
		}
		s.conns[g] = struct{}{}
		s.counters.connections.Add(1)
	} else if _, ok := s.conns[g]; ok {
		delete(s.conns, g)
		s.counters.connections.Add(-1)
	}
	return tracked
}

func (s *Server) handleConn(g *guardConn) {
	defer s.wg.Done()
	defer s.track(g, false)
	defer func() {
		// The library decodes in this goroutine; whatever slips past the
		// validator must cost one connection, never the process.
		if r := recover(); r != nil {
			s.counters.panics.Add(1)
			s.log.Error("spoe: panic in connection; closed it", "panic", r, "remote", g.RemoteAddr().String())
		}
		_ = g.Conn.Close()
	}()
	if err := s.serveConn(g); err != nil {
		s.log.Debug("spoe: connection ended", "remote", g.RemoteAddr().String(), "err", err)
	}
}

// Shutdown stops accepting, lets every connection finish the frames it is
// processing (their ACKs are sent), then closes it. It returns when all
// connections are closed or ctx ends (then it closes them abruptly).
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	if s.listener != nil {
		_ = s.listener.Close()
	}
	for g := range s.conns {
		g.stop()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		s.cancel()
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for g := range s.conns {
			_ = g.Conn.Close()
		}
		s.mu.Unlock()
		s.cancel()
		return ctx.Err()
	}
}

// workers runs NOTIFY handlers on goroutines that outlive one frame: a
// handler's stack, grown once by a store round trip, is reused instead of
// grown again (morestack, copystack) for every frame. An idle worker exits
// after workerIdle, or at shutdown.
type workers struct {
	work chan func()
	done <-chan struct{}
}

const workerIdle = 2 * time.Second

func (p *workers) run(f func()) {
	select {
	case p.work <- f: // an idle worker took it
	default:
		go p.loop(f)
	}
}

func (p *workers) loop(f func()) {
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	for {
		f()
		idle.Reset(workerIdle)
		select {
		case f = <-p.work:
		case <-idle.C:
			return
		case <-p.done:
			return
		}
	}
}
