package spoe

import (
	"bytes"
	"context"
	"encoding/binary"
	"github.com/stickyd/stickyd/internal/spop"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stickyd/stickyd/agent"
	"github.com/stickyd/stickyd/internal/spoptest"
)

type fakeDecider struct {
	mu      sync.Mutex
	queries []agent.Query
	answer  string
	block   chan struct{}
	panicOn string
}

func (f *fakeDecider) Decide(_ context.Context, q *agent.Query) agent.Decision {
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
	return startServerMax(t, d, 65536)
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

func TestServerSurvivesGarbage(t *testing.T) {
	d := &fakeDecider{answer: "n1", panicOn: "panic-me"}
	s, addr := startServer(t, d)
	bad := map[string][]byte{
		"http":              []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		"huge length":       {0xff, 0xff, 0xff, 0xff, 1, 0, 0, 0, 1},
		"zero length":       {0, 0, 0, 0},
		"no arg count":      spoptest.Frame(spop.FrameNotify, flagFin, 1, 1, spoptest.AppendString(nil, "m")),
		"notify before ack": spoptest.Notify(1, 1, MessageName, connectMsg([]byte("a"))),
		"agent frame":       spoptest.Frame(103, flagFin, 0, 0, nil),
		"truncated":         helloFrame(false)[:9],
	}
	for name, payload := range bad {
		t.Run(name, func(t *testing.T) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_, _ = c.Write(payload)
			if name == "truncated" {
				return
			}
			// The agent closes the connection (possibly after a hello reply).
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, _ = io.Copy(io.Discard, c)
		})
	}
	t.Run("malformed notify after hello", func(t *testing.T) {
		c := dialHello(t, addr)
		_, _ = c.Write(spoptest.Frame(spop.FrameNotify, flagFin, 1, 1, append(spoptest.AppendString(nil, "m"), 9)))
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, _ = io.Copy(io.Discard, c)
	})
	t.Run("handler panic", func(t *testing.T) {
		c := dialHello(t, addr)
		_, _ = c.Write(spoptest.Notify(5, 1, MessageName, connectMsg([]byte("panic-me"))))
		if _, _, srv := ackServer(t, readFrame(t, c)); srv != "" {
			t.Fatalf("want an empty ACK after a panic, got %q", srv)
		}
	})
	// Still serving.
	c := dialHello(t, addr)
	_, _ = c.Write(spoptest.Notify(1, 1, MessageName, connectMsg([]byte("ok"))))
	if _, _, srv := ackServer(t, readFrame(t, c)); srv != "n1" {
		t.Fatalf("after garbage: %q", srv)
	}
	if s.Stats().BadFrames == 0 || s.Stats().Panics == 0 {
		t.Fatalf("stats not counted: bad=%d panics=%d", s.Stats().BadFrames, s.Stats().Panics)
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
	d := &fakeDecider{answer: "n1", block: make(chan struct{})}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(d, slog.New(slog.NewTextHandler(io.Discard, nil)), 65536)
	served := make(chan error, 1)
	go func() { served <- s.Serve(l) }()
	c := dialHello(t, l.Addr().String())
	_, _ = c.Write(spoptest.Notify(3, 1, MessageName, connectMsg([]byte("in-flight"))))
	time.Sleep(50 * time.Millisecond) // let the frame reach the handler

	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shut <- s.Shutdown(ctx)
	}()
	// New connections are refused once shutting down.
	time.Sleep(50 * time.Millisecond)
	if c2, err := net.DialTimeout("tcp", l.Addr().String(), time.Second); err == nil {
		c2.Close()
		t.Fatal("listener still accepting during shutdown")
	}
	close(d.block)
	if _, _, srv := ackServer(t, readFrame(t, c)); srv != "n1" {
		t.Fatalf("in-flight frame lost: %q", srv)
	}
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
}

type kvp = spoptest.KV

// flagFin marks a final frame (doc/SPOE.txt §3.2).
const flagFin = 0x01

func helloFrame(healthcheck bool) []byte { return spoptest.Hello("test-engine", healthcheck) }
