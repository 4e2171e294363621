package spoe

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/stickyd/stickyd/internal/spop"
	"github.com/stickyd/stickyd/internal/spoptest"
)

// Deadlines are short here so the tests are quick; every wait on the
// agent is bounded by expectClosed's 3 s, far above them.
var shortLimits = Limits{FrameTimeout: 300 * time.Millisecond, IdleTimeout: 600 * time.Millisecond}

func TestHelloDeadline(t *testing.T) {
	for _, tc := range []struct {
		name string
		sent []byte
	}{
		{"nothing sent", nil},
		{"part of a HELLO", helloFrame(false)[:9]},
		{"a HELLO's header promising more", []byte{0, 0, 0x3f, 0xf0, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, addr := startServerLim(t, &fakeDecider{}, shortLimits)
			c := dialRaw(t, addr)
			if _, err := c.Write(tc.sent); err != nil {
				t.Fatal(err)
			}
			if got := expectClosed(t, c); len(got) != 0 {
				t.Fatalf("agent sent % x", got)
			}
			waitStats(t, s, func(st Stats) bool { return st.HelloTimeouts == 1 && st.Connections == 0 })
		})
	}
}

// A frame begun must be whole within FrameTimeout of its start, however
// slowly its bytes trickle in.
func TestFrameDeadline(t *testing.T) {
	s, addr := startServerLim(t, &fakeDecider{}, shortLimits)
	c := dialHello(t, addr)
	frame := spoptest.Notify(1, 1, MessageName, connectMsg(bytes.Repeat([]byte("x"), 10000)))
	if _, err := c.Write(frame[:100]); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() { // one byte each 50 ms: the connection is never idle
		for i := 100; i < len(frame); i++ {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			if _, err := c.Write(frame[i : i+1]); err != nil {
				return
			}
		}
	}()
	expectClosed(t, c)
	waitStats(t, s, func(st Stats) bool { return st.FrameTimeouts == 1 && st.Connections == 0 })
	if st := s.Stats(); st.IdleTimeouts != 0 || st.Messages != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// An idle connection past IdleTimeout is closed; one with a frame now and
// then, more often than that, is not.
func TestIdleDeadline(t *testing.T) {
	s, addr := startServerLim(t, &fakeDecider{answer: "n1"}, shortLimits)
	busy := dialHello(t, addr)
	idle := dialHello(t, addr)
	closed := make(chan error, 1)
	go func() { // expectClosed may not fail the test from here
		_ = idle.SetReadDeadline(time.Now().Add(5 * time.Second))
		b, err := io.ReadAll(idle)
		if err == nil && len(b) > 0 {
			err = fmt.Errorf("idle connection got % x", b)
		}
		closed <- err
	}()
	// Three idle timeouts' worth of traffic on busy, a frame per third of
	// one: it stays open, and idle is closed meanwhile.
	for i := 1; i <= 9; i++ {
		time.Sleep(shortLimits.IdleTimeout / 3)
		if _, err := busy.Write(spoptest.Notify(uint64(i), 1, MessageName, connectMsg([]byte("dev")))); err != nil {
			t.Fatal(err)
		}
		if sid, _, srv := ackServer(t, readFrame(t, busy)); sid != uint64(i) || srv != "n1" {
			t.Fatalf("busy connection: ACK %d %q", sid, srv)
		}
	}
	if err := <-closed; err != nil {
		t.Fatalf("idle connection: %v", err)
	}
	waitStats(t, s, func(st Stats) bool { return st.IdleTimeouts == 1 && st.Connections == 1 })
}

// Past MaxConnections a connection is closed at once, unanswered; those
// open keep working, and a slot freed is taken again.
func TestMaxConnections(t *testing.T) {
	s, addr := startServerLim(t, &fakeDecider{answer: "n2"}, Limits{MaxConnections: 3})
	open := []net.Conn{dialHello(t, addr), dialHello(t, addr), dialHello(t, addr)}
	for i := 0; i < 2; i++ {
		c := dialRaw(t, addr)
		_, _ = c.Write(helloFrame(false)) // may fail: the agent closed first
		if got := expectClosed(t, c); len(got) != 0 {
			t.Fatalf("refused connection got % x", got)
		}
	}
	waitStats(t, s, func(st Stats) bool { return st.Refused == 2 && st.Accepted == 3 && st.Connections == 3 })
	for i, c := range open {
		if _, err := c.Write(spoptest.Notify(uint64(i+1), 1, MessageName, connectMsg([]byte("dev")))); err != nil {
			t.Fatal(err)
		}
		if sid, _, srv := ackServer(t, readFrame(t, c)); sid != uint64(i+1) || srv != "n2" {
			t.Fatalf("open connection %d: ACK %d %q", i, sid, srv)
		}
	}
	open[0].Close()
	waitStats(t, s, func(st Stats) bool { return st.Connections == 2 })
	dialHello(t, addr)
	if st := s.Stats(); st.Refused != 2 || st.Accepted != 4 {
		t.Fatalf("stats %+v", st)
	}
}

// An ACK HAProxy does not take within FrameTimeout closes the connection.
// net.Pipe has no buffer: a write waits for the peer to read.
func TestWriteDeadline(t *testing.T) {
	s := NewServer(&fakeDecider{answer: "n1"}, discard, shortLimits)
	client, server := net.Pipe()
	defer client.Close()
	l := &pipeListener{conns: make(chan net.Conn, 1), done: make(chan struct{})}
	l.conns <- server
	served := make(chan error, 1)
	go func() { served <- s.Serve(l) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	_ = client.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := client.Write(helloFrame(false)); err != nil {
		t.Fatal(err)
	}
	if body := readFrame(t, client); body[0] != spop.FrameAgentHello {
		t.Fatalf("type %d", body[0])
	}
	if _, err := client.Write(spoptest.Notify(1, 1, MessageName, connectMsg([]byte("dev")))); err != nil {
		t.Fatal(err)
	}
	waitStats(t, s, func(st Stats) bool { return st.WriteTimeouts == 1 && st.Connections == 0 })
	if _, err := client.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("read after the agent gave up: %v", err)
	}
}

// scriptConn replays data, then fails every read with a timeout: a peer
// that sent that much and stopped.
type scriptConn struct {
	net.Conn
	r *bytes.Reader
}

func (c *scriptConn) Read(p []byte) (int, error) {
	if c.r.Len() == 0 {
		return 0, os.ErrDeadlineExceeded
	}
	return c.r.Read(p)
}
func (c *scriptConn) SetReadDeadline(time.Time) error { return nil }
func (c *scriptConn) RemoteAddr() net.Addr            { return &net.TCPAddr{} }

// A frame's buffer follows the bytes received, not the length announced.
func TestFrameBufferGrowsWithBytesReceived(t *testing.T) {
	s := NewServer(&fakeDecider{}, discard, Limits{})
	for _, tc := range []struct {
		sent    int // body bytes sent of the 60000 announced
		maxCap  int
		wantErr bool
	}{
		{100, smallFrame, true},
		{5000, 2 * smallFrame, true},
		{20000, 2 * (spop.HeaderLen + 20000), true},
		{60000, spop.HeaderLen + 60000, false},
	} {
		body := bytes.Repeat([]byte{0xaa}, tc.sent)
		g := &guardConn{Conn: &scriptConn{r: bytes.NewReader(body)}, srv: s, helloed: true}
		g.init()
		binary.BigEndian.PutUint32(g.hdr[:], 60000)
		err := g.readBody(60000)
		if (err != nil) != tc.wantErr || cap(g.buf) > tc.maxCap {
			t.Errorf("%d of 60000 bytes sent: buffer of %d bytes (at most %d), err %v", tc.sent, cap(g.buf), tc.maxCap, err)
		}
		if !tc.wantErr && !bytes.Equal(g.buf[spop.HeaderLen:], body) {
			t.Errorf("%d bytes: body differs", tc.sent)
		}
	}
}
