package spoe

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/negasus/haproxy-spoe-go/frame"

	"github.com/stickyd/stickyd/internal/spop"
)

// serveConn speaks SPOP on one connection: HELLO, then NOTIFY frames until
// DISCONNECT or the end of the stream. Frames reach the library's decoder
// only once validated; the agent's frames are encoded here, each whole in
// one write. A NOTIFY the decider can answer without I/O is answered here,
// its ACK held until no further frame is buffered (one write for a burst);
// any other goes to a worker goroutine, as the library did: a decision may
// wait on the store, and must not hold the frames HAProxy pipelined behind.
func (s *Server) serveConn(g *guardConn) error {
	w := g.w
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
			server, next := s.decideMessages(f.Messages, 0, "", true)
			if next < 0 {
				acks = spop.AppendAck(acks, f.StreamID, f.FrameID, VarServer, server)
				frame.ReleaseFrame(f)
				continue
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
func (s *Server) notify(w *frameWriter, f *frame.Frame, from int, server string) {
	defer frame.ReleaseFrame(f)
	server, _ = s.decideMessages(f.Messages, from, server, false)
	if err := w.ack(f.StreamID, f.FrameID, server); err != nil {
		s.log.Debug("spoe: cannot write ACK", "err", err)
	}
}

// helloMaxFrame bounds frames before the HELLO has told us HAProxy's size.
const helloMaxFrame = 16 << 10

// readBufSize buffers the connection: one read() takes in every frame
// HAProxy has sent so far, not two per frame (length, then body).
const readBufSize = 8 << 10

// smallFrame is the most a frame's buffer takes before any byte of its
// body arrived: larger frames grow with what arrives (doubling, up to
// their length), and their buffer is dropped once they are read.
const smallFrame = 4 << 10

// guardConn hands the library one validated frame at a time.
type guardConn struct {
	net.Conn
	srv      *Server
	w        *frameWriter
	br       *bufio.Reader
	maxFrame int
	hdr      [spop.HeaderLen]byte
	buf      []byte
	pending  []byte
	stopping atomic.Bool

	helloBy  time.Time // a whole HELLO must have arrived by then
	helloed  bool      // a HELLO was read
	frameBy  time.Time // the frame being read must be whole by then
	phase    phase     // what deadline bounds
	deadline time.Time // the read deadline in force
}

// init readies an accepted connection.
func (g *guardConn) init() {
	g.maxFrame = min(g.srv.lim.MaxFrameSize, helloMaxFrame)
	g.br = bufio.NewReaderSize(g.Conn, readBufSize)
	g.w = &frameWriter{conn: g.Conn, srv: g.srv}
	g.helloBy = time.Now().Add(g.srv.lim.FrameTimeout)
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
	if n < spop.HeaderLen {
		return false
	}
	hdr, err := g.br.Peek(spop.HeaderLen)
	return err == nil && uint64(n) >= spop.HeaderLen+uint64(binary.BigEndian.Uint32(hdr))
}

func (g *guardConn) next() error {
	if g.stopping.Load() {
		return io.EOF
	}
	if cap(g.buf) > smallFrame {
		g.buf = nil // a large frame's buffer is not kept for the next
	}
	if g.br.Buffered() == 0 {
		if err := g.awaitFrame(); err != nil {
			return g.readErr(err)
		}
		if _, err := g.br.Peek(1); err != nil {
			return g.readErr(err)
		}
	}
	if err := g.inFrame(spop.HeaderLen); err != nil {
		return g.readErr(err)
	}
	if _, err := io.ReadFull(g.br, g.hdr[:]); err != nil {
		return g.readErr(err)
	}
	n, err := spop.FrameLen(g.hdr[:], g.maxFrame)
	if err != nil {
		return g.refuse(err)
	}
	if err := g.readBody(n); err != nil {
		return g.readErr(err)
	}
	fi, err := spop.ValidateFrame(g.buf[spop.HeaderLen:])
	if err != nil {
		return g.refuse(err)
	}
	if fi.Type == spop.FrameHAProxyHello {
		g.helloed = true
		if fi.Healthcheck {
			g.srv.counters.healthChecks.Add(1)
		}
		if fi.MaxFrameSize > 0 {
			// Announced in AGENT-HELLO: at most HAProxy's size, and our cap.
			g.maxFrame = min(int(fi.MaxFrameSize), g.srv.lim.MaxFrameSize)
		}
	}
	g.srv.counters.frames.Add(1)
	g.pending = g.buf
	return nil
}

// readBody reads a frame body of n bytes into g.buf, after the header.
// Memory follows the bytes that arrived: a frame larger than smallFrame
// starts there and doubles as its bytes come in, so a peer that announces
// a large frame and stops costs no more than what it sent.
func (g *guardConn) readBody(n int) error {
	total := spop.HeaderLen + n
	if total <= max(cap(g.buf), smallFrame) || g.br.Buffered() >= n {
		if cap(g.buf) < total {
			g.buf = make([]byte, max(total, smallFrame))
		}
		g.buf = append(g.buf[:0], g.hdr[:]...)[:total]
		if err := g.inFrame(n); err != nil {
			return err
		}
		_, err := io.ReadFull(g.br, g.buf[spop.HeaderLen:])
		return err
	}
	if cap(g.buf) < smallFrame {
		g.buf = make([]byte, 0, smallFrame)
	}
	g.buf = append(g.buf[:0], g.hdr[:]...)
	for len(g.buf) < total {
		if len(g.buf) == cap(g.buf) {
			grown := make([]byte, len(g.buf), min(total, 2*cap(g.buf)))
			copy(grown, g.buf)
			g.buf = grown
		}
		if err := g.inFrame(1); err != nil {
			return err
		}
		m, err := g.br.Read(g.buf[len(g.buf):min(cap(g.buf), total)])
		g.buf = g.buf[:len(g.buf)+m]
		if err != nil && len(g.buf) < total {
			return err
		}
	}
	return nil
}

func (g *guardConn) refuse(err error) error {
	g.srv.counters.badFrames.Add(1)
	g.srv.log.Warn("spoe: closing connection after a bad frame", "remote", g.RemoteAddr().String(), "err", err)
	return io.EOF
}

// readErr maps the ways a peer goes away to a clean end: HAProxy 3.1+ closes
// idle agent connections with a TCP RST, which is not an error. A deadline
// is counted, unless Shutdown set it.
func (g *guardConn) readErr(err error) error {
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, net.ErrClosed), errors.Is(err, syscall.EPIPE):
		return io.EOF
	case errors.Is(err, errStopping), isTimeout(err) && g.stopping.Load():
		return io.EOF
	case isTimeout(err):
		return g.timedOut()
	}
	return err
}

// frameWriter writes whole frames to one connection; ACKs may come from
// several goroutines. A write must be taken within FrameTimeout; one that
// fails closes the connection, whose frames can no longer be trusted to
// be whole.
type frameWriter struct {
	mu       sync.Mutex
	conn     net.Conn
	srv      *Server
	buf      []byte
	deadline time.Time
}

func (w *frameWriter) write(encode func([]byte) []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = encode(w.buf[:0])
	return w.writeLocked(w.buf)
}

// writeFrames writes frames already encoded, in one write.
func (w *frameWriter) writeFrames(b []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.writeLocked(b)
}

func (w *frameWriter) writeLocked(b []byte) error {
	timeout := w.srv.lim.FrameTimeout
	if t := time.Now().Add(timeout); w.deadline.Before(t.Add(-timeout / 4)) {
		// Re-armed only when a quarter of it has passed: every write has
		// between 3/4 of FrameTimeout and all of it.
		if err := w.conn.SetWriteDeadline(t); err != nil {
			return fmt.Errorf("spoe write: %w", err)
		}
		w.deadline = t
	}
	if _, err := w.conn.Write(b); err != nil {
		if isTimeout(err) {
			w.srv.counters.writeTimeouts.Add(1)
			w.srv.stalled("write", w.conn.RemoteAddr())
		}
		_ = w.conn.Close()
		return fmt.Errorf("spoe write: %w", err)
	}
	return nil
}

func (w *frameWriter) ack(sid, fid uint64, server string) error {
	return w.write(func(b []byte) []byte { return spop.AppendAck(b, sid, fid, VarServer, server) })
}

func (w *frameWriter) agentHello(maxFrame uint32) error {
	return w.write(func(b []byte) []byte { return spop.AppendAgentHello(b, maxFrame) })
}

func (w *frameWriter) agentDisconnect() error {
	return w.write(spop.AppendAgentDisconnect)
}
