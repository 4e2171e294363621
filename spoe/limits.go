package spoe

import (
	"errors"
	"fmt"
	"net"
	"os"
	"time"
)

// Limits bound what one peer of the SPOE port can hold of the agent: a
// connection, its goroutine and its buffers live only as long as frames
// keep arriving whole, and a frame's buffer grows with the bytes received,
// never with the length it announces. Zero fields take the defaults.
type Limits struct {
	// MaxFrameSize caps accepted frames whatever HAProxy announces.
	MaxFrameSize int
	// MaxConnections caps open connections; past it a connection is
	// closed as soon as it is accepted (HAProxy falls back for that
	// exchange).
	MaxConnections int
	// FrameTimeout is how long a frame may take to arrive whole once its
	// first byte did (the HELLO: from the accept), and one write.
	FrameTimeout time.Duration
	// IdleTimeout closes a connection with no frame for that long. Keep it
	// well above HAProxy's own limits on idle agent connections, which it
	// reuses: 2.6's timeout idle, 3.1+'s timeout server of the agents
	// backend.
	IdleTimeout time.Duration
}

// Defaults of Limits.
const (
	DefaultMaxFrameSize   = 65536
	DefaultMaxConnections = 1024
	DefaultFrameTimeout   = 10 * time.Second
	DefaultIdleTimeout    = 10 * time.Minute
)

func (l Limits) withDefaults() Limits {
	if l.MaxFrameSize <= 0 {
		l.MaxFrameSize = DefaultMaxFrameSize
	}
	if l.MaxConnections <= 0 {
		l.MaxConnections = DefaultMaxConnections
	}
	if l.FrameTimeout <= 0 {
		l.FrameTimeout = DefaultFrameTimeout
	}
	if l.IdleTimeout <= 0 {
		l.IdleTimeout = DefaultIdleTimeout
	}
	return l
}

// refuse closes a connection accepted past MaxConnections, before any
// goroutine or buffer is spent on it.
func (s *Server) refuse(c net.Conn) {
	n := s.counters.refused.Add(1)
	_ = c.Close()
	s.refusals.Warn("spoe: refusing connections: spoe_max_connections are open", "max", s.lim.MaxConnections, "refused_total", n)
}

// phase is what the read deadline in force bounds.
type phase uint8

const (
	phaseHello phase = iota // accept to a whole HELLO
	phaseIdle               // between frames
	phaseFrame              // a frame begun, not whole yet
)

func (p phase) String() string {
	return [...]string{"hello", "idle", "frame"}[p]
}

// errTimeout ends a connection a deadline closed.
var errTimeout = errors.New("deadline exceeded")

// timedOut counts and reports a connection a read deadline closed.
func (g *guardConn) timedOut() error {
	c := &g.srv.counters
	switch g.phase {
	case phaseHello:
		c.helloTimeouts.Add(1)
	case phaseIdle:
		c.idleTimeouts.Add(1)
	default:
		c.frameTimeouts.Add(1)
	}
	if g.phase != phaseIdle {
		g.srv.stalled(g.phase.String(), g.RemoteAddr())
	}
	return fmt.Errorf("%s: %w", g.phase, errTimeout)
}

// stalled reports, at most every 10 s, a connection closed because its
// peer stopped mid-exchange: HAProxy never does.
func (s *Server) stalled(phase string, remote net.Addr) {
	s.stalls.Warn("spoe: closing stalled connections", "phase", phase, "remote", remote.String(), "timeout", s.lim.FrameTimeout)
}

// setReadDeadline moves the read deadline to t in phase p. It skips the
// call when the deadline in force is already within slack before t: a
// connection busy with whole frames does not re-arm a timer per frame.
// A Shutdown that stopped the connection meanwhile wins.
func (g *guardConn) setReadDeadline(p phase, t time.Time, slack time.Duration) error {
	g.phase = p
	if g.deadline.After(t) || g.deadline.Before(t.Add(-slack)) {
		if err := g.Conn.SetReadDeadline(t); err != nil {
			return err
		}
		g.deadline = t
	}
	if g.stopping.Load() {
		return errStopping
	}
	return nil
}

var errStopping = errors.New("stopping")

// awaitFrame arms the deadline for the wait before a frame's first byte.
func (g *guardConn) awaitFrame() error {
	if !g.helloed {
		return g.setReadDeadline(phaseHello, g.helloBy, 0)
	}
	l := &g.srv.lim
	g.frameBy = time.Time{}
	return g.setReadDeadline(phaseIdle, time.Now().Add(l.IdleTimeout), l.IdleTimeout/8)
}

// inFrame arms the deadline before a read within a frame: the frame must
// be whole within FrameTimeout of the first read that waited for it (the
// HELLO: of the accept). No-op while the bytes are already buffered.
func (g *guardConn) inFrame(need int) error {
	if g.br.Buffered() >= need {
		return nil
	}
	if !g.helloed {
		return g.setReadDeadline(phaseHello, g.helloBy, 0)
	}
	if g.frameBy.IsZero() {
		g.frameBy = time.Now().Add(g.srv.lim.FrameTimeout)
	}
	return g.setReadDeadline(phaseFrame, g.frameBy, 0)
}

// isTimeout reports a deadline's error.
func isTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }
