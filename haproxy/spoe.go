// Package haproxy speaks HAProxy: the SPOE agent wire adapter, the
// configuration generator, and (later) the Runtime API. It holds no routing
// logic; decisions come from the agent package.
package haproxy

import (
	"bufio"
	"context"
	"encoding/binary"
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

	"github.com/negasus/haproxy-spoe-go/frame"
	"github.com/negasus/haproxy-spoe-go/message"
	"github.com/negasus/haproxy-spoe-go/payload/kv"

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

// InlineDecider is a Decider that can often answer without waiting on I/O
// (agent.Agent, on the memory store or a warm Redis cache). Such NOTIFY
// frames are answered on the connection's own goroutine, with no hand-off,
// and the ACKs of frames that arrived together leave in one write.
type InlineDecider interface {
	// TryDecide answers q, or returns false having done nothing.
	TryDecide(q *agent.Query) (agent.Decision, bool)
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

// SPOEServer is an SPOE agent. negasus/haproxy-spoe-go v1.0.7 decodes the
// frames HAProxy sends; the rest is ours, for the guard rails that library
// lacks and for speed: the accept and frame loops with connection tracking,
// every frame validated (length first) before the library reads it, panics
// recovered, the agent's frames encoded here (only string values), and a
// graceful shutdown that lets in-flight frames finish.
type SPOEServer struct {
	decider      Decider
	log          *slog.Logger
	maxFrameSize int
	Stats        SPOEStats

	ctx    context.Context
	cancel context.CancelFunc

	workers workers

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
		conns:   map[*guardConn]struct{}{},
		workers: workers{work: make(chan func()), done: ctx.Done()},
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
		g := &guardConn{Conn: c, srv: s, maxFrame: min(s.maxFrameSize, helloMaxFrame), br: bufio.NewReaderSize(c, readBufSize)}
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
		}
		_ = g.Conn.Close()
	}()
	if err := s.serveConn(g); err != nil {
		s.log.Debug("spoe: connection ended", "remote", g.RemoteAddr().String(), "err", err)
	}
}

// serveConn speaks SPOP on one connection: HELLO, then NOTIFY frames until
// DISCONNECT or the end of the stream. Frames reach the library's decoder
// only once validated; the agent's frames are encoded here, each whole in
// one write. A NOTIFY the decider can answer without I/O is answered here,
// its ACK held until no further frame is buffered (one write for a burst);
// any other goes to a worker goroutine, as the library did: a decision may
// wait on the store, and must not hold the frames HAProxy pipelined behind.
func (s *SPOEServer) serveConn(g *guardConn) error {
	w := &frameWriter{conn: g.Conn}
	inline, _ := s.decider.(InlineDecider)
	var inflight sync.WaitGroup
	defer inflight.Wait() // every NOTIFY read is answered before the close
	var acks []byte       // answered inline, not written yet
	flush := func() error {
		if len(acks) == 0 {
			return nil
		}
		err := w.writeFrames(acks)
		acks = acks[:0]
		return err
	}
	defer func() { _ = flush() }()
	hello := false
	for {
		if !g.frameReady() {
			if err := flush(); err != nil {
				return err
			}
		}
		f := frame.AcquireFrame()
		if err := f.Read(g); err != nil {
			frame.ReleaseFrame(f)
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		switch {
		case f.Type == frame.TypeHaproxyHello && !hello:
			healthcheck := f.Healthcheck
			frame.ReleaseFrame(f)
			if err := w.agentHello(uint32(g.maxFrame)); err != nil || healthcheck {
				return err
			}
			hello = true
		case f.Type == frame.TypeHaproxyDisconnect && hello:
			frame.ReleaseFrame(f)
			if err := flush(); err != nil {
				return err
			}
			inflight.Wait()
			return w.agentDisconnect()
		case f.Type == frame.TypeNotify && hello:
			server, next := "", 0
			if inline != nil {
				if server, next = s.decideMessages(f.Messages, 0, "", inline); next < 0 {
					acks = appendAck(acks, f.StreamID, f.FrameID, server)
					frame.ReleaseFrame(f)
					continue
				}
			}
			inflight.Add(1)
			s.workers.run(func() {
				defer inflight.Done()
				s.notify(w, f, next, server)
			})
		default:
			typ := f.Type
			frame.ReleaseFrame(f)
			return fmt.Errorf("unexpected frame type %d (after HELLO: %v)", typ, hello)
		}
	}
}

// notify decides a NOTIFY frame's messages from index from on (server is
// what the earlier ones chose), answers it and releases it.
func (s *SPOEServer) notify(w *frameWriter, f *frame.Frame, from int, server string) {
	defer frame.ReleaseFrame(f)
	server, _ = s.decideMessages(f.Messages, from, server, nil)
	if err := w.ack(f.StreamID, f.FrameID, server); err != nil {
		s.log.Debug("spoe: cannot write ACK", "err", err)
	}
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

// queries recycles Query values: the decider is an interface, so a Query
// passed to it would otherwise escape to the heap at every message.
var queries = sync.Pool{New: func() any { return new(agent.Query) }}

// decideMessages decides the stickyd messages of a NOTIFY from index from
// on and returns the server to set ("" for none; the last message wins, as
// successive set-var actions would in HAProxy), starting from server. With
// inline set it decides only through TryDecide, and stops at the first
// message that needs I/O: next is its index, to resume from, or -1 when
// every message was decided.
func (s *SPOEServer) decideMessages(msgs *message.Messages, from int, server string, inline InlineDecider) (result string, next int) {
	defer func() {
		if r := recover(); r != nil {
			s.Stats.Panics.Add(1)
			s.log.Error("spoe: panic in handler; answered without actions", "panic", r)
			result, next = "", -1
		}
	}()
	q := queries.Get().(*agent.Query)
	defer queries.Put(q)
	for i := from; i < msgs.Len(); i++ {
		msg, err := msgs.GetByIndex(i)
		if err != nil || !strings.HasPrefix(msg.Name, MessageName) {
			continue
		}
		q.Reset()
		if err := s.fillQuery(q, msg.KV.Data()); err != nil {
			s.Stats.Messages.Add(1)
			s.Stats.BadMessages.Add(1)
			s.log.Debug("spoe: message ignored", "err", err)
			continue
		}
		var d agent.Decision
		if inline != nil {
			var ok bool
			if d, ok = inline.TryDecide(q); !ok {
				return server, i
			}
		} else {
			d = s.decider.Decide(s.ctx, q)
		}
		s.Stats.Messages.Add(1)
		if d.Server != "" {
			server = d.Server
		}
	}
	return server, -1
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
			// str(<backend>) arrives as a string: use it as is, no copy.
			switch v := it.Value.(type) {
			case string:
				q.Backend = v
			case []byte:
				q.Backend = string(v)
			default:
				return fmt.Errorf("%s: want string, got %T", argBackend, it.Value)
			}
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

// readBufSize buffers the connection: one read() takes in every frame
// HAProxy has sent so far, not two per frame (length, then body).
const readBufSize = 8 << 10

// guardConn hands the library one validated frame at a time.
type guardConn struct {
	net.Conn
	srv      *SPOEServer
	br       *bufio.Reader
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

// frameReady reports whether the next frame is already buffered whole, so
// reading it will not wait on the network.
func (g *guardConn) frameReady() bool {
	if len(g.pending) > 0 {
		return true
	}
	n := g.br.Buffered()
	if n < frameHeaderLen {
		return false
	}
	hdr, err := g.br.Peek(frameHeaderLen)
	return err == nil && uint64(n) >= frameHeaderLen+uint64(binary.BigEndian.Uint32(hdr))
}

func (g *guardConn) next() error {
	if g.stopping.Load() {
		return io.EOF
	}
	if _, err := io.ReadFull(g.br, g.hdr[:]); err != nil {
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
	if _, err := io.ReadFull(g.br, g.buf[frameHeaderLen:]); err != nil {
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
			// Announced in AGENT-HELLO: at most HAProxy's size, and our cap.
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

// frameWriter writes whole frames to one connection; ACKs may come from
// several goroutines.
type frameWriter struct {
	mu   sync.Mutex
	conn net.Conn
	buf  []byte
}

func (w *frameWriter) write(encode func([]byte) []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = encode(w.buf[:0])
	if _, err := w.conn.Write(w.buf); err != nil {
		return fmt.Errorf("spoe write: %w", err)
	}
	return nil
}

// writeFrames writes frames already encoded, in one write.
func (w *frameWriter) writeFrames(b []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, err := w.conn.Write(b); err != nil {
		return fmt.Errorf("spoe write: %w", err)
	}
	return nil
}

func (w *frameWriter) ack(sid, fid uint64, server string) error {
	return w.write(func(b []byte) []byte { return appendAck(b, sid, fid, server) })
}

func (w *frameWriter) agentHello(maxFrame uint32) error {
	return w.write(func(b []byte) []byte { return appendAgentHello(b, maxFrame) })
}

func (w *frameWriter) agentDisconnect() error {
	return w.write(appendAgentDisconnect)
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
