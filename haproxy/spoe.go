// Package haproxy speaks HAProxy: the SPOE agent wire adapter, the
// configuration generator, and (later) the Runtime API. It holds no routing
// logic; decisions come from the agent package.
package haproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/negasus/haproxy-spoe-go/action"
	"github.com/negasus/haproxy-spoe-go/payload/kv"
	"github.com/negasus/haproxy-spoe-go/request"
	"github.com/negasus/haproxy-spoe-go/worker"

	"github.com/stickyd/stickyd/agent"
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
	argSessionExpiry = "session_expiry"
	argUpPrefix      = "up_"
)

// Decider is what the adapter needs from the agent.
type Decider interface {
	Decide(ctx context.Context, q *agent.Query) agent.Decision
}

// SPOEStats counts what the adapter saw.
type SPOEStats struct {
	Connections  atomic.Int64  // open now
	Accepted     atomic.Uint64 // since start
	Frames       atomic.Uint64 // valid frames passed to the library
	BadFrames    atomic.Uint64 // connections closed for a bad frame
	Panics       atomic.Uint64 // panics recovered
	Messages     atomic.Uint64 // stickyd-connect messages handled
	BadMessages  atomic.Uint64 // messages with missing or mistyped args
	HealthChecks atomic.Uint64
}

// SPOEServer is an SPOE agent over negasus/haproxy-spoe-go v1.0.7 with the
// guard rails that library lacks: its own accept loop with connection
// tracking, every frame validated (length first) before the library reads
// it, panics recovered, only string values sent back, and a graceful
// shutdown that lets in-flight frames finish.
type SPOEServer struct {
	decider      Decider
	log          *slog.Logger
	maxFrameSize int
	Stats        SPOEStats

	ctx    context.Context
	cancel context.CancelFunc

	mu       sync.Mutex
	listener net.Listener
	conns    map[*guardConn]struct{}
	closing  bool
	wg       sync.WaitGroup
}

// NewSPOEServer returns a server handing messages to d. maxFrameSize caps
// accepted frames whatever HAProxy announces.
func NewSPOEServer(d Decider, log *slog.Logger, maxFrameSize int) *SPOEServer {
	ctx, cancel := context.WithCancel(context.Background())
	return &SPOEServer{
		decider: d, log: log, maxFrameSize: maxFrameSize,
		ctx: ctx, cancel: cancel,
		conns: map[*guardConn]struct{}{},
	}
}

// Serve accepts connections until Shutdown; it then returns nil.
func (s *SPOEServer) Serve(l net.Listener) error {
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
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetNoDelay(true)
		}
		g := &guardConn{Conn: c, srv: s, maxFrame: min(s.maxFrameSize, helloMaxFrame)}
		if !s.track(g, true) {
			_ = c.Close()
			return nil
		}
		s.Stats.Accepted.Add(1)
		s.wg.Add(1)
		go s.handleConn(g)
	}
}

func (s *SPOEServer) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

func (s *SPOEServer) track(g *guardConn, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		if s.closing {
			return false
		}
		s.conns[g] = struct{}{}
		s.Stats.Connections.Add(1)
	} else if _, ok := s.conns[g]; ok {
		delete(s.conns, g)
		s.Stats.Connections.Add(-1)
	}
	return true
}

func (s *SPOEServer) handleConn(g *guardConn) {
	defer s.wg.Done()
	defer s.track(g, false)
	defer func() {
		// The library decodes in this goroutine; whatever slips past the
		// validator must cost one connection, never the process.
		if r := recover(); r != nil {
			s.Stats.Panics.Add(1)
			s.log.Error("spoe: panic in connection; closed it", "panic", r, "remote", g.RemoteAddr().String())
			_ = g.Conn.Close()
		}
	}()
	worker.Handle(g, s.handle, libLogger{s.log})
}

// Shutdown stops accepting, lets every connection finish the frames it is
// processing (their ACKs are sent), then closes it. It returns when all
// connections are closed or ctx ends (then it closes them abruptly).
func (s *SPOEServer) Shutdown(ctx context.Context) error {
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

// handle runs in a library goroutine per NOTIFY frame.
func (s *SPOEServer) handle(req *request.Request) {
	defer func() {
		if r := recover(); r != nil {
			s.Stats.Panics.Add(1)
			s.log.Error("spoe: panic in handler; answered without actions", "panic", r)
			req.Actions.Reset()
		}
	}()
	var q agent.Query
	for i := 0; i < req.Messages.Len(); i++ {
		msg, err := req.Messages.GetByIndex(i)
		if err != nil || !strings.HasPrefix(msg.Name, MessageName) {
			continue
		}
		s.Stats.Messages.Add(1)
		q.Reset()
		if err := s.fillQuery(&q, msg.KV.Data()); err != nil {
			s.Stats.BadMessages.Add(1)
			s.log.Debug("spoe: message ignored", "err", err)
			continue
		}
		d := s.decider.Decide(s.ctx, &q)
		if d.Server != "" {
			// Strings only: the library panics encoding negative or large ints.
			req.Actions.SetVar(action.ScopeSession, VarServer, d.Server)
		}
	}
}

type kvItem = kv.Item

// backendLookup resolves server names to indexes for up_<server> args.
type backendLookup interface {
	Backend(name string) *agent.Backend
}

func (s *SPOEServer) fillQuery(q *agent.Query, items []kvItem) error {
	var be *agent.Backend
	bl, _ := s.decider.(backendLookup)
	for _, it := range items {
		switch it.Name {
		case argBackend:
			name, ok := asBytes(it.Value)
			if !ok {
				return fmt.Errorf("%s: want string, got %T", argBackend, it.Value)
			}
			q.Backend = string(name)
			if bl != nil {
				be = bl.Backend(q.Backend)
			}
		case argClientID:
			if b, ok := asBytes(it.Value); ok {
				q.ClientID = b
			}
		case argUsername:
			if b, ok := asBytes(it.Value); ok {
				q.Username = b
			}
		case argSessionExpiry:
			if secs, ok := asUint(it.Value); ok {
				q.SessionExpiry = time.Duration(min(secs, uint64(1<<32))) * time.Second
			}
		}
	}
	if q.Backend == "" {
		return errors.New("no backend argument")
	}
	if be != nil {
		for _, it := range items {
			if len(it.Name) > len(argUpPrefix) && it.Name[:len(argUpPrefix)] == argUpPrefix {
				if up, ok := it.Value.(bool); ok {
					q.SetUp(be.ServerIndex(it.Name[len(argUpPrefix):]), up)
				}
			}
		}
	}
	return nil
}

// asBytes accepts STRING and BINARY: mqtt_field_value yields BINARY.
func asBytes(v any) ([]byte, bool) {
	switch t := v.(type) {
	case []byte:
		return t, true
	case string:
		return []byte(t), true
	}
	return nil, false
}

// asUint accepts integer types and decimal strings (HAProxy may render an
// MQTT property as text).
func asUint(v any) (uint64, bool) {
	switch t := v.(type) {
	case int32:
		return uint64(max(t, 0)), true
	case uint32:
		return uint64(t), true
	case int64:
		return uint64(max(t, 0)), true
	case uint64:
		return t, true
	case string:
		n, err := strconv.ParseUint(t, 10, 64)
		return n, err == nil
	case []byte:
		if len(t) == 4 {
			// A raw four-byte integer, as the MQTT wire carries it.
			return uint64(t[0])<<24 | uint64(t[1])<<16 | uint64(t[2])<<8 | uint64(t[3]), true
		}
		n, err := strconv.ParseUint(string(t), 10, 64)
		return n, err == nil
	}
	return 0, false
}

// helloMaxFrame bounds frames before the HELLO has told us HAProxy's size.
const helloMaxFrame = 16 << 10

// guardConn hands the library one validated frame at a time.
type guardConn struct {
	net.Conn
	srv      *SPOEServer
	maxFrame int
	hdr      [frameHeaderLen]byte
	buf      []byte
	pending  []byte
	stopping atomic.Bool
}

// stop makes the next read at a frame boundary end the connection cleanly.
func (g *guardConn) stop() {
	g.stopping.Store(true)
	_ = g.Conn.SetReadDeadline(time.Now())
}

func (g *guardConn) Read(p []byte) (int, error) {
	if len(g.pending) == 0 {
		if err := g.next(); err != nil {
			return 0, err
		}
	}
	n := copy(p, g.pending)
	g.pending = g.pending[n:]
	return n, nil
}

func (g *guardConn) next() error {
	if g.stopping.Load() {
		return io.EOF
	}
	if _, err := io.ReadFull(g.Conn, g.hdr[:]); err != nil {
		return g.readErr(err)
	}
	n, err := frameLen(g.hdr[:], g.maxFrame)
	if err != nil {
		return g.refuse(err)
	}
	if cap(g.buf) < frameHeaderLen+n {
		g.buf = make([]byte, frameHeaderLen+n)
	}
	g.buf = g.buf[:frameHeaderLen+n]
	copy(g.buf, g.hdr[:])
	if _, err := io.ReadFull(g.Conn, g.buf[frameHeaderLen:]); err != nil {
		return g.readErr(err)
	}
	fi, err := validateFrame(g.buf[frameHeaderLen:])
	if err != nil {
		return g.refuse(err)
	}
	if fi.Type == frameHAProxyHello {
		if fi.Healthcheck {
			g.srv.Stats.HealthChecks.Add(1)
		}
		if fi.MaxFrameSize > 0 {
			// The library echoes HAProxy's size; never accept more than we cap.
			g.maxFrame = min(int(fi.MaxFrameSize), g.srv.maxFrameSize)
		}
	}
	g.srv.Stats.Frames.Add(1)
	g.pending = g.buf
	return nil
}

func (g *guardConn) refuse(err error) error {
	g.srv.Stats.BadFrames.Add(1)
	g.srv.log.Warn("spoe: closing connection after a bad frame", "remote", g.RemoteAddr().String(), "err", err)
	return io.EOF
}

// readErr maps the ways a peer goes away to a clean end: HAProxy 3.1+ closes
// idle agent connections with a TCP RST, which is not an error.
func (g *guardConn) readErr(err error) error {
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, net.ErrClosed), errors.Is(err, syscall.EPIPE):
		return io.EOF
	case errors.Is(err, os.ErrDeadlineExceeded) && g.stopping.Load():
		return io.EOF
	}
	return err
}

// libLogger routes the library's messages to slog at debug: with our own
// validation in front, what it reports is connection noise.
type libLogger struct{ log *slog.Logger }

func (l libLogger) Errorf(format string, args ...interface{}) {
	l.log.Debug("spoe library: " + fmt.Sprintf(format, args...))
}
