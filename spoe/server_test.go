package spoe

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stickyd/stickyd/agent"
	"github.com/stickyd/stickyd/internal/spop"
	"github.com/stickyd/stickyd/internal/spoptest"
)

// fakeDecider answers every query on a worker (never inline) with answer,
// recording it; its Backend is a real agent's.
type fakeDecider struct {
	realBackends
	mu      sync.Mutex
	queries []agent.Query
	answer  string
	block   chan struct{}
	// entered, when set, receives each query as Decide starts.
	entered chan struct{}
	panicOn string
}

func (f *fakeDecider) TryDecide(*agent.Query) (agent.Decision, bool) { return agent.Decision{}, false }

func (f *fakeDecider) Decide(_ context.Context, q *agent.Query) agent.Decision {
	if f.entered != nil {
		f.entered <- struct{}{}
	}
	if f.block != nil {
		<-f.block
	}
	if f.panicOn != "" && string(q.ClientID) == f.panicOn {
		panic("boom")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	c := *q
	c.ClientID = append([]byte(nil), q.ClientID...)
	f.queries = append(f.queries, c)
	return agent.Decision{Server: f.answer, Outcome: agent.OutcomeExisting}
}

func startServer(t *testing.T, d Decider) (*Server, string) {
	t.Helper()
	return startServerLim(t, d, Limits{})
}

// readFrame reads one frame and returns its body (after the length).
func readFrame(t *testing.T, c net.Conn) []byte {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var hdr [4]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		t.Fatalf("read frame: %v", err)
	}
	body := make([]byte, binary.BigEndian.Uint32(hdr[:]))
	if _, err := io.ReadFull(c, body); err != nil {
		t.Fatalf("read frame body: %v", err)
	}
	return body
}

func dialHello(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write(helloFrame(false)); err != nil {
		t.Fatal(err)
	}
	if b := readFrame(t, c); b[0] != 101 {
		t.Fatalf("want AGENT-HELLO (101), got type %d", b[0])
	}
	return c
}

// ackServer extracts the set-var value from an ACK, "" when it has none.
func ackServer(t *testing.T, body []byte) (sid, fid uint64, server string) {
	t.Helper()
	if body[0] != 103 {
		t.Fatalf("want ACK (103), got %d", body[0])
	}
	r := spop.Reader{B: body[5:]}
	sid, _ = r.Varint()
	fid, _ = r.Varint()
	if len(r.B) == 0 {
		return sid, fid, ""
	}
	// action set-var: type 1, nb-args 3, scope, name, value
	if r.B[0] != 1 || r.B[1] != 3 || r.B[2] != byte(1) {
		t.Fatalf("unexpected action % x", r.B)
	}
	r.B = r.B[3:]
	name, _ := r.Bytes()
	if string(name) != VarServer {
		t.Fatalf("var name %q", name)
	}
	typ, v, err := r.Typed()
	if err != nil || typ != spop.TypeString {
		t.Fatalf("var value type %d err %v", typ, err)
	}
	return sid, fid, string(v.S)
}

func connectMsg(cid []byte) []kvp {
	return []kvp{{"backend", "mqtt"}, {"client_id", cid}, {"username", nil}, {"session_expiry", "3600"}, {"up_n1", true}, {"up_n2", false}}
}

func TestServerAnswers(t *testing.T) {
	d := &fakeDecider{answer: "n2"}
	_, addr := startServer(t, d)
	c := dialHello(t, addr)
	for i, cid := range [][]byte{[]byte("dev-1"), {0, 0xff, '/', '%'}, bytes.Repeat([]byte("x"), 4000)} {
		if _, err := c.Write(spoptest.Notify(uint64(i+10), 1, MessageName, connectMsg(cid))); err != nil {
			t.Fatal(err)
		}
		sid, fid, srv := ackServer(t, readFrame(t, c))
		if sid != uint64(i+10) || fid != 1 || srv != "n2" {
			t.Fatalf("ack sid=%d fid=%d srv=%q", sid, fid, srv)
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.queries) != 3 || !bytes.Equal(d.queries[1].ClientID, []byte{0, 0xff, '/', '%'}) || d.queries[0].SessionExpiry != time.Hour {
		t.Fatalf("queries: %+v", d.queries)
	}
}

// expectClosed reads c until the agent closes it, within a deadline far
// shorter than any of the agent's own, and returns what it read.
func expectClosed(t *testing.T, c net.Conn) []byte {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	b, err := io.ReadAll(c)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the agent did not close the connection (read %d bytes)", len(b))
	}
	return b
}

func TestServerSurvivesGarbage(t *testing.T) {
	d := &fakeDecider{answer: "n1", panicOn: "panic-me"}
	s, addr := startServer(t, d)
	bad := []struct {
		name    string
		payload []byte
		hello   bool // the agent answers a HELLO before closing
	}{
		{"http", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), false},
		{"huge length", []byte{0xff, 0xff, 0xff, 0xff, 1, 0, 0, 0, 1}, false},
		{"zero length", []byte{0, 0, 0, 0}, false},
		{"no arg count", spoptest.Frame(spop.FrameNotify, flagFin, 1, 1, spoptest.AppendString(nil, "m")), false},
		{"agent frame", spoptest.Frame(103, flagFin, 0, 0, nil), false},
		{"mistyped disconnect", mistypedDisconnect, false},
		{"mistyped disconnect after hello", append(helloFrame(false), mistypedDisconnect...), true},
		{"malformed notify after hello", append(helloFrame(false), spoptest.Frame(spop.FrameNotify, flagFin, 1, 1, append(spoptest.AppendString(nil, "m"), 9))...), true},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			before := s.Stats()
			c := dialRaw(t, addr)
			if _, err := c.Write(tc.payload); err != nil {
				t.Fatal(err)
			}
			got := expectClosed(t, c)
			if hello := len(got) > spop.HeaderLen && got[spop.HeaderLen] == spop.FrameAgentHello; hello != tc.hello {
				t.Fatalf("AGENT-HELLO sent: %v, want %v (% x)", hello, tc.hello, got)
			}
			waitStats(t, s, func(st Stats) bool { return st.BadFrames == before.BadFrames+1 && st.Connections == before.Connections })
			if st := s.Stats(); st.Panics != before.Panics {
				t.Fatalf("panics %d, want %d", st.Panics, before.Panics)
			}
		})
	}
	// Protocol errors the validator lets through (each frame is fine on
	// its own) close the connection too, without counting a bad frame.
	for _, tc := range []struct {
		name    string
		payload []byte
	}{
		{"notify before hello", spoptest.Notify(1, 1, MessageName, connectMsg([]byte("a")))},
		{"second hello", append(helloFrame(false), helloFrame(false)...)},
		{"disconnect before hello", spoptest.Frame(spop.FrameHAProxyDisconnect, flagFin, 0, 0, nil)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := s.Stats()
			c := dialRaw(t, addr)
			if _, err := c.Write(tc.payload); err != nil {
				t.Fatal(err)
			}
			expectClosed(t, c)
			waitStats(t, s, func(st Stats) bool { return st.Connections == before.Connections })
			if st := s.Stats(); st.BadFrames != before.BadFrames || st.Messages != before.Messages {
				t.Fatalf("bad frames %d messages %d, want %d and %d", st.BadFrames, st.Messages, before.BadFrames, before.Messages)
			}
		})
	}
	t.Run("handler panic", func(t *testing.T) {
		before := s.Stats()
		c := dialHello(t, addr)
		_, _ = c.Write(spoptest.Notify(5, 1, MessageName, connectMsg([]byte("panic-me"))))
		if _, _, srv := ackServer(t, readFrame(t, c)); srv != "" {
			t.Fatalf("want an empty ACK after a panic, got %q", srv)
		}
		if st := s.Stats(); st.Panics != before.Panics+1 {
			t.Fatalf("panics %d, want %d", st.Panics, before.Panics+1)
		}
	})
	// Still serving.
	c := dialHello(t, addr)
	_, _ = c.Write(spoptest.Notify(1, 1, MessageName, connectMsg([]byte("ok"))))
	if _, _, srv := ackServer(t, readFrame(t, c)); srv != "n1" {
		t.Fatalf("after garbage: %q", srv)
	}
}

// waitStats waits (a few seconds at most) for the server's counters to
// satisfy ok: a connection's end is counted just after it closes.
func waitStats(t *testing.T, s *Server, ok func(Stats) bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok(s.Stats()) {
		if time.Now().After(deadline) {
			t.Fatalf("stats: %+v", s.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestServerHealthcheck(t *testing.T) {
	s, addr := startServer(t, &fakeDecider{})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = c.Write(helloFrame(true))
	if b := readFrame(t, c); b[0] != 101 {
		t.Fatalf("type %d", b[0])
	}
	if n, _ := c.Read(make([]byte, 1)); n != 0 {
		t.Fatal("connection should close after a health check")
	}
	if s.Stats().HealthChecks != 1 {
		t.Fatal("health check not counted")
	}
}

func TestServerGracefulShutdown(t *testing.T) {
	d := &fakeDecider{answer: "n1", block: make(chan struct{}), entered: make(chan struct{}, 1)}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(d, discard, Limits{})
	served := make(chan error, 1)
	go func() { served <- s.Serve(l) }()
	c := dialHello(t, l.Addr().String())
	_, _ = c.Write(spoptest.Notify(3, 1, MessageName, connectMsg([]byte("in-flight"))))
	<-d.entered // the frame reached the handler

	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shut <- s.Shutdown(ctx)
	}()
	// Serve returns once the listener is closed; new connections are
	// refused from then on, while the in-flight frame is still held.
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if c2, err := net.DialTimeout("tcp", l.Addr().String(), time.Second); err == nil {
		c2.Close()
		t.Fatal("listener still accepting during shutdown")
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned (%v) before the in-flight frame was answered", err)
	default:
	}
	close(d.block)
	if _, _, srv := ackServer(t, readFrame(t, c)); srv != "n1" {
		t.Fatalf("in-flight frame lost: %q", srv)
	}
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

type kvp = spoptest.KV

// flagFin marks a final frame (doc/SPOE.txt §3.2).
const flagFin = 0x01

func helloFrame(healthcheck bool) []byte { return spoptest.Hello("test-engine", healthcheck) }

// mistypedDisconnect is a DISCONNECT whose healthcheck is the string "x"
// (issue 10): it reached the library's type assertion and panicked.
var mistypedDisconnect = []byte{0x00, 0x00, 0x00, 0x16, 0x02, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x0b,
	'h', 'e', 'a', 'l', 't', 'h', 'c', 'h', 'e', 'c', 'k', 0x08, 0x01, 'x'}
