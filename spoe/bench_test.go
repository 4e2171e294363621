package spoe

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"github.com/stickyd/stickyd/internal/spop"
	"io"
	"net"
	"sync"
	"testing"

	"github.com/negasus/haproxy-spoe-go/frame"

	"github.com/stickyd/stickyd/agent"
	"github.com/stickyd/stickyd/internal/spoptest"
)

// SPOE hot-path benchmarks: what one CONNECT costs the agent between
// HAProxy's NOTIFY and our ACK. Compare runs with benchstat; never assert
// timing.

const benchClientID = "bench-device-10000000042"

// benchNotify is the NOTIFY frame HAProxy 2.6 sends for an MQTT 3.1.1
// CONNECT under the generated configuration: backend as a string, the
// client id as binary (mqtt_field_value), no username, no session expiry.
func benchNotify(sid uint64) []byte {
	return spoptest.Notify(sid, 1, MessageName+"-mqtt", []kvp{
		{"backend", "mqtt"}, {"client_id", []byte(benchClientID)}, {"username", nil},
		{"session_expiry", nil}, {"up_n1", true}, {"up_n2", true},
	})
}

// benchAgent is an agent on the memory store with benchClientID bound.
func benchAgent(b *testing.B) *agent.Agent {
	b.Helper()
	a := newAgent(b)
	q := &agent.Query{Backend: "mqtt", ClientID: []byte(benchClientID)}
	if d := a.Decide(context.Background(), q); d.Server == "" {
		b.Fatalf("warm-up: %+v", d)
	}
	return a
}

func benchServer(b *testing.B, d Decider) *Server {
	return NewServer(d, discard, Limits{})
}

// libDecode decodes a frame with the library, as its worker does.
func libDecode(b *testing.B, raw []byte) *frame.Frame {
	f := frame.AcquireFrame()
	if err := f.Read(bytes.NewReader(raw)); err != nil {
		b.Fatal(err)
	}
	return f
}

// BenchmarkValidateFrame is our bounds-checked validation of every frame.
func BenchmarkValidateFrame(b *testing.B) {
	body := benchNotify(1)[spop.HeaderLen:]
	b.ReportAllocs()
	for b.Loop() {
		if _, err := spop.ValidateFrame(body); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLibDecodeNotify is the library's decoding of the same frame
// (what the SPOE library forces on every CONNECT).
func BenchmarkLibDecodeNotify(b *testing.B) {
	raw := benchNotify(1)
	r := bytes.NewReader(raw)
	b.ReportAllocs()
	for b.Loop() {
		r.Reset(raw)
		f := frame.AcquireFrame()
		if err := f.Read(r); err != nil {
			b.Fatal(err)
		}
		frame.ReleaseFrame(f)
	}
}

// BenchmarkFillQuery turns the decoded arguments into an agent.Query.
func BenchmarkFillQuery(b *testing.B) {
	s := benchServer(b, benchAgent(b))
	f := libDecode(b, benchNotify(1))
	msg, _ := f.Messages.GetByIndex(0)
	items := msg.KV.Data()
	var q agent.Query
	b.ReportAllocs()
	for b.Loop() {
		q.Reset()
		if err := s.fillQuery(&q, items); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHandleWarm is the whole handler on a decoded frame: arguments
// and the decision on a warm binding (memory store), answered inline
// (TryDecide, as the connection goroutine does) and as a worker does
// (Decide, with the store budget's context).
func BenchmarkHandleWarm(b *testing.B) {
	s := benchServer(b, benchAgent(b))
	f := libDecode(b, benchNotify(1))
	for _, bc := range []struct {
		name   string
		inline bool
	}{{"inline", true}, {"worker", false}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if srv, next := s.decideMessages(f.Messages, 0, "", bc.inline); srv == "" || next >= 0 {
					b.Fatal("no server")
				}
			}
		})
	}
}

// BenchmarkEncodeAck is the encoding of our ACK (one set-var).
func BenchmarkEncodeAck(b *testing.B) {
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		buf = spop.AppendAck(buf[:0], 1, 1, VarServer, "n1")
	}
}

// pipeListener hands out one in-memory connection, then blocks until closed.
type pipeListener struct {
	conns chan net.Conn
	once  sync.Once
	done  chan struct{}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error   { l.once.Do(func() { close(l.done) }); return nil }
func (l *pipeListener) Addr() net.Addr { return &net.UnixAddr{Name: "pipe", Net: "pipe"} }

// BenchmarkNotifyAck is one full exchange through the server, as HAProxy
// sees it: NOTIFY written, frame validated, decoded by the library,
// decided on a warm binding (memory store), ACK encoded and read back.
// net.Pipe keeps the kernel out, so what remains is the agent's own cost.
func BenchmarkNotifyAck(b *testing.B) {
	s := benchServer(b, benchAgent(b))
	client, server := net.Pipe()
	l := &pipeListener{conns: make(chan net.Conn, 1), done: make(chan struct{})}
	l.conns <- server
	served := make(chan error, 1)
	go func() { served <- s.Serve(l) }()
	b.Cleanup(func() {
		_ = client.Close()
		_ = s.Shutdown(context.Background())
		if err := <-served; err != nil {
			b.Errorf("Serve: %v", err)
		}
	})

	r := bufio.NewReader(client)
	if _, err := client.Write(helloFrame(false)); err != nil {
		b.Fatal(err)
	}
	if body, err := readBody(r, nil); err != nil || body[0] != 101 {
		b.Fatalf("hello: type %v, %v", body, err)
	}
	notify := benchNotify(1)
	var body []byte
	b.ReportAllocs()
	for b.Loop() {
		if _, err := client.Write(notify); err != nil {
			b.Fatal(err)
		}
		var err error
		if body, err = readBody(r, body); err != nil {
			b.Fatal(err)
		}
		if body[0] != 103 {
			b.Fatalf("want ACK (103), got type %d", body[0])
		}
	}
}

// readBody reads one frame's body into buf (reused) and returns it.
func readBody(r *bufio.Reader, buf []byte) ([]byte, error) {
	var hdr [spop.HeaderLen]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, fmt.Errorf("frame length: %w", err)
	}
	n, err := spop.FrameLen(hdr[:], 1<<16)
	if err != nil {
		return nil, err
	}
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, fmt.Errorf("frame body: %w", err)
	}
	return buf, nil
}
