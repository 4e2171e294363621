package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/stickyd/stickyd/internal/spoptest"
	"github.com/stickyd/stickyd/spoe"
)

// An SPOP peer that talks to a stickyd agent as HAProxy does (HELLO, then
// pipelined NOTIFY frames, one per CONNECT), to place a million new clients
// through the agent's real path in seconds, without a million TCP
// connections through HAProxy.

// Frame types of the agent's answers.
const (
	spopAgentHi = 101
	spopAck     = 103
)

// appendNotify appends the NOTIFY the generated configuration sends for
// one MQTT 3.1.1 CONNECT with both servers up.
func appendNotify(b []byte, sid uint64, clientID []byte) []byte {
	return spoptest.AppendFrame(b, spoptest.FrameNotify, spoptest.FlagFin, sid, 1,
		spoptest.Message(spoe.MessageName+"-"+backendName, []spoptest.KV{
			{"backend", backendName}, {"client_id", clientID}, {"username", nil},
			{"session_expiry", nil}, {"up_n1", true}, {"up_n2", true},
		}))
}

// readFrameType reads one frame and returns its type.
func readFrameType(r *bufio.Reader, buf []byte) (byte, []byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, buf, err
	}
	n := int(binary.BigEndian.Uint32(hdr[:]))
	if n < 1 || n > 1<<16 {
		return 0, buf, fmt.Errorf("spop: frame of %d bytes", n)
	}
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		return 0, buf, fmt.Errorf("spop: frame body: %w", err)
	}
	return buf[0], buf, nil
}

// placeThroughSPOE sends one NOTIFY per id (id(buf, i) for i in [0, n))
// over conns connections with up to window frames in flight on each, and
// returns how many were answered with a server.
func placeThroughSPOE(ctx context.Context, addr string, n, conns, window int, id func([]byte, int) []byte) (int64, error) {
	var answered atomic.Int64
	var next atomic.Int64
	errs := make(chan error, conns)
	var wg sync.WaitGroup
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- spopSession(ctx, addr, window, &answered, func(buf []byte) ([]byte, bool) {
				i := int(next.Add(1)) - 1
				if i >= n {
					return buf, false
				}
				return id(buf, i), true
			})
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return answered.Load(), err
		}
	}
	return answered.Load(), ctx.Err()
}

// spopSession runs one connection: HELLO, then NOTIFY frames for the ids
// next yields, batched into one write when the window allows.
func spopSession(ctx context.Context, addr string, window int, answered *atomic.Int64, next func([]byte) ([]byte, bool)) error {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return fmt.Errorf("spop dial: %w", err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	r := bufio.NewReaderSize(conn, 64<<10)
	if _, err := conn.Write(spoptest.Hello("stickyd-bench", false)); err != nil {
		return fmt.Errorf("spop hello: %w", err)
	}
	if typ, _, err := readFrameType(r, nil); err != nil || typ != spopAgentHi {
		return fmt.Errorf("spop hello: want AGENT-HELLO, got type %d (%v)", typ, err)
	}

	slots := make(chan struct{}, window) // one per frame in flight
	readErr := make(chan error, 1)
	go func() { readErr <- readAcks(r, slots, answered) }()
	acquire := func() error {
		select {
		case slots <- struct{}{}:
			return nil
		case err := <-readErr:
			return fmt.Errorf("spop ack: %w", err)
		}
	}

	var out, id []byte
	var sid uint64
	for more := true; more; {
		if err := acquire(); err != nil {
			return err
		}
		out = out[:0]
		// One slot taken; batch whatever else is free, up to 64 frames.
		for batch := 1; ; batch++ {
			if id, more = next(id); !more {
				<-slots
				break
			}
			sid++
			out = appendNotify(out, sid, id)
			if batch == 64 {
				break
			}
			select {
			case slots <- struct{}{}:
				continue
			default:
			}
			break
		}
		if len(out) > 0 {
			if _, err := conn.Write(out); err != nil {
				return fmt.Errorf("spop notify: %w", err)
			}
		}
	}
	// Every slot back means every frame was answered.
	for range window {
		if err := acquire(); err != nil {
			return err
		}
	}
	return nil
}

// readAcks frees one slot per ACK until the connection ends.
func readAcks(r *bufio.Reader, slots chan struct{}, answered *atomic.Int64) error {
	var buf []byte
	for {
		var typ byte
		var err error
		if typ, buf, err = readFrameType(r, buf); err != nil {
			return err
		}
		if typ != spopAck {
			return fmt.Errorf("want ACK, got frame type %d", typ)
		}
		if ackHasAction(buf) {
			answered.Add(1)
		}
		<-slots
	}
}

// ackHasAction reports whether an ACK body carries an action (the agent
// named a server) after its type, flags, stream-id and frame-id.
func ackHasAction(b []byte) bool {
	if len(b) < 5 {
		return false
	}
	p := b[5:]
	for range 2 {
		i := 0
		if len(p) > 0 && p[0] >= 240 {
			for i = 1; i < len(p) && p[i] >= 128; i++ {
			}
		}
		p = p[min(i+1, len(p)):]
	}
	return len(p) > 0
}
