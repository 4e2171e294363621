package spoe

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
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
					acks = spop.AppendAck(acks, f.StreamID, f.FrameID, VarServer, server)
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
func (s *Server) notify(w *frameWriter, f *frame.Frame, from int, server string) {
	defer frame.ReleaseFrame(f)
	server, _ = s.decideMessages(f.Messages, from, server, nil)
	if err := w.ack(f.StreamID, f.FrameID, server); err != nil {
		s.log.Debug("spoe: cannot write ACK", "err", err)
	}
}

// helloMaxFrame bounds frames before the HELLO has told us HAProxy's size.
const helloMaxFrame = 16 << 10

// readBufSize buffers the connection: one read() takes in every frame
// HAProxy has sent so far, not two per frame (length, then body).
const readBufSize = 8 << 10

// guardConn hands the library one validated frame at a time.
type guardConn struct {
	net.Conn
	srv      *Server
	br       *bufio.Reader
	maxFrame int
	hdr      [spop.HeaderLen]byte
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
	if _, err := io.ReadFull(g.br, g.hdr[:]); err != nil {
		return g.readErr(err)
	}
	n, err := spop.FrameLen(g.hdr[:], g.maxFrame)
	if err != nil {
		return g.refuse(err)
	}
	if cap(g.buf) < spop.HeaderLen+n {
		g.buf = make([]byte, spop.HeaderLen+n)
	}
	g.buf = g.buf[:spop.HeaderLen+n]
	copy(g.buf, g.hdr[:])
	if _, err := io.ReadFull(g.br, g.buf[spop.HeaderLen:]); err != nil {
		return g.readErr(err)
	}
	fi, err := spop.ValidateFrame(g.buf[spop.HeaderLen:])
	if err != nil {
		return g.refuse(err)
	}
	if fi.Type == spop.FrameHAProxyHello {
		if fi.Healthcheck {
			g.srv.counters.healthChecks.Add(1)
		}
		if fi.MaxFrameSize > 0 {
			// Announced in AGENT-HELLO: at most HAProxy's size, and our cap.
			g.maxFrame = min(int(fi.MaxFrameSize), g.srv.maxFrameSize)
		}
	}
	g.srv.counters.frames.Add(1)
	g.pending = g.buf
	return nil
}

func (g *guardConn) refuse(err error) error {
	g.srv.counters.badFrames.Add(1)
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
	return w.write(func(b []byte) []byte { return spop.AppendAck(b, sid, fid, VarServer, server) })
}

func (w *frameWriter) agentHello(maxFrame uint32) error {
	return w.write(func(b []byte) []byte { return spop.AppendAgentHello(b, maxFrame) })
}

func (w *frameWriter) agentDisconnect() error {
	return w.write(spop.AppendAgentDisconnect)
}
