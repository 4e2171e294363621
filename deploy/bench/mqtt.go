package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"
)

// Just enough MQTT for a CONNECT-rate benchmark: hand-built packets, so the
// load generator costs far less than what it measures.

const (
	mqtt311 = 4 // protocol level of MQTT 3.1.1
	mqtt5   = 5

	pktConnect    = 0x10
	pktConnack    = 0x20
	pktDisconnect = 0xe0

	// sessionExpiry is what MQTT 5 clients ask for (property 0x11): below
	// stickyd's 30m TTL, so the binding TTL stays the configured one.
	sessionExpiry = 600
)

// appendRemLen appends MQTT's variable-length "remaining length".
func appendRemLen(b []byte, n int) []byte {
	for {
		c := byte(n % 128)
		n /= 128
		if n > 0 {
			c |= 0x80
		}
		b = append(b, c)
		if n == 0 {
			return b
		}
	}
}

// appendConnect appends a clean-session CONNECT for id at the given
// protocol level (MQTT 5 adds a session expiry interval property).
func appendConnect(b []byte, level byte, id string) []byte {
	var vh [20]byte
	v := append(vh[:0], 0, 4, 'M', 'Q', 'T', 'T', level, 0x02, 0, 60) // clean session, keepalive 60s
	if level == mqtt5 {
		v = append(v, 5, 0x11, 0, 0, sessionExpiry>>8, sessionExpiry&0xff)
	}
	b = append(b, pktConnect)
	b = appendRemLen(b, len(v)+2+len(id))
	b = append(b, v...)
	b = append(b, byte(len(id)>>8), byte(len(id)))
	return append(b, id...)
}

// appendConnack appends a successful CONNACK; the MQTT 5 one names the
// node in a user property ("node" = name), so a client could see where it
// landed.
func appendConnack(b []byte, level byte, node string) []byte {
	if level != mqtt5 {
		return append(b, pktConnack, 2, 0, 0)
	}
	props := 1 + 2 + len("node") + 2 + len(node)
	b = append(b, pktConnack)
	b = appendRemLen(b, 2+1+props)
	b = append(b, 0, 0, byte(props), 0x26, 0, 4, 'n', 'o', 'd', 'e', byte(len(node)>>8), byte(len(node)))
	return append(b, node...)
}

var (
	errProtocol = errors.New("mqtt protocol error")
	disconnect  = []byte{pktDisconnect, 0}
)

// readPacket reads one packet into buf (reused) and returns its first byte
// and body. Bodies larger than buf are refused: nothing here sends them.
func readPacket(r *bufio.Reader, buf []byte) (byte, []byte, error) {
	h, err := r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n := 0
	for i := 0; ; i++ {
		if i == 4 {
			return 0, nil, fmt.Errorf("%w: remaining length over 4 bytes", errProtocol)
		}
		c, err := r.ReadByte()
		if err != nil {
			return 0, nil, fmt.Errorf("remaining length: %w", err)
		}
		n |= int(c&0x7f) << (7 * i)
		if c < 0x80 {
			break
		}
	}
	if n > cap(buf) {
		return 0, nil, fmt.Errorf("%w: %d-byte packet", errProtocol, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		return 0, nil, fmt.Errorf("packet body: %w", err)
	}
	return h, buf, nil
}

// parseConnect returns the protocol level and client id of a CONNECT body.
func parseConnect(body []byte) (byte, string, error) {
	if len(body) < 10 || string(body[:6]) != "\x00\x04MQTT" {
		return 0, "", fmt.Errorf("%w: not an MQTT CONNECT", errProtocol)
	}
	level, p := body[6], body[10:]
	if level == mqtt5 {
		n, used := 0, 0
		for mul := 1; used < len(p); mul *= 128 {
			c := p[used]
			used++
			n += int(c&0x7f) * mul
			if c < 0x80 {
				break
			}
		}
		if used+n > len(p) {
			return 0, "", fmt.Errorf("%w: properties beyond the packet", errProtocol)
		}
		p = p[used+n:]
	}
	if len(p) < 2 || len(p) < 2+int(p[0])<<8|int(p[1]) {
		return 0, "", fmt.Errorf("%w: truncated client id", errProtocol)
	}
	return level, string(p[2 : 2+int(p[0])<<8|int(p[1])]), nil
}

// client is one load-generator worker's reusable state.
type client struct {
	addr string
	out  []byte
	in   []byte
	r    *bufio.Reader
}

func newClient(addr string) *client {
	return &client{addr: addr, out: make([]byte, 0, 128), in: make([]byte, 0, 256), r: bufio.NewReaderSize(nil, 256)}
}

// cycle connects, sends CONNECT, waits for CONNACK, sends DISCONNECT and
// waits for the server to close (so TIME_WAIT lands on the server side, not
// on this side's ephemeral ports). It returns the CONNECT-to-CONNACK time.
func (c *client) cycle(level byte, id string) (time.Duration, error) {
	conn, err := net.DialTimeout("tcp", c.addr, 5*time.Second)
	if err != nil {
		return 0, fmt.Errorf("dial: %w", err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	c.out = appendConnect(c.out[:0], level, id)
	c.r.Reset(conn)
	start := time.Now()
	if _, err := conn.Write(c.out); err != nil {
		return 0, fmt.Errorf("connect: %w", err)
	}
	h, body, err := readPacket(c.r, c.in)
	if err != nil {
		return 0, fmt.Errorf("connack: %w", err)
	}
	lat := time.Since(start)
	if h != pktConnack || len(body) < 2 || body[1] != 0 {
		return 0, fmt.Errorf("%w: want a successful CONNACK, got %#x % x", errProtocol, h, body)
	}
	if _, err := conn.Write(disconnect); err != nil {
		return 0, fmt.Errorf("disconnect: %w", err)
	}
	if _, err := c.r.ReadByte(); !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		return 0, fmt.Errorf("want the server to close after DISCONNECT, got %v", err)
	}
	return lat, nil
}
