package main

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// Fake MQTT broker nodes: they answer every CONNECT with a CONNACK at once
// and close on DISCONNECT, so the broker is never the bottleneck. Both nodes
// of a configuration share a ledger that says whether reconnects came back
// to the node their client id first reached.

// ledger remembers each client id's first node and, within a measured
// round, counts reconnects and those that reached that node.
type ledger struct {
	mu         sync.Mutex
	first      map[string]int
	counting   bool
	reconnects uint64
	sticky     uint64
}

func newLedger() *ledger { return &ledger{first: make(map[string]int)} }

func (l *ledger) record(id string, node int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f, seen := l.first[id]
	if !seen {
		l.first[id] = node
		return
	}
	if l.counting {
		l.reconnects++
		if f == node {
			l.sticky++
		}
	}
}

// begin starts counting a round.
func (l *ledger) begin() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.counting, l.reconnects, l.sticky = true, 0, 0
}

// end stops counting and returns the round's reconnects and sticky ones.
func (l *ledger) end() (reconnects, sticky uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.counting = false
	return l.reconnects, l.sticky
}

// broker is one fake node.
type broker struct {
	name string
	node int
	l    net.Listener
	led  *ledger
}

// startBrokers starts nodes n1 and n2 on free loopback ports.
func startBrokers(led *ledger) ([]*broker, error) {
	var out []*broker
	for i := range 2 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			for _, b := range out {
				_ = b.l.Close()
			}
			return nil, fmt.Errorf("broker listener: %w", err)
		}
		b := &broker{name: fmt.Sprintf("n%d", i+1), node: i, l: l, led: led}
		go b.serve()
		out = append(out, b)
	}
	return out, nil
}

func (b *broker) addr() string { return b.l.Addr().String() }

func (b *broker) serve() {
	for {
		c, err := b.l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond) // out of descriptors: let others finish
			continue
		}
		go b.handle(c)
	}
}

// handle answers one connection. HAProxy's TCP health checks connect and
// close without a byte; its MQTT health checks (stickyd's generated
// configuration) send a CONNECT with an empty client id, answered but not
// recorded: an empty id has no binding. Anything that is not a CONNECT is
// dropped silently.
func (b *broker) handle(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReaderSize(c, 256)
	buf := make([]byte, 0, 256)
	h, body, err := readPacket(r, buf)
	if err != nil || h != pktConnect {
		return
	}
	level, id, err := parseConnect(body)
	if err != nil {
		return
	}
	if id != "" {
		b.led.record(id, b.node)
	}
	if _, err := c.Write(appendConnack(buf[:0], level, b.name)); err != nil {
		return
	}
	// Wait for DISCONNECT (or the client going away), then close first.
	_, _, _ = readPacket(r, buf)
}
