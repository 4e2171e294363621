package testenv

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"
)

// ProxyBroker is a fake MQTT broker that, like a broker configured to
// require the PROXY protocol, closes any connection that does not start
// with a PROXY v2 header. It answers CONNECT with CONNACK (and PINGREQ,
// SUBSCRIBE) and records what each connection carried. Mosquitto cannot
// stand in: it does not read PROXY headers.
type ProxyBroker struct {
	Name string
	Addr string

	mu      sync.Mutex
	conns   []ProxyConn
	refused int
}

// ProxyConn is what one connection to a ProxyBroker carried.
type ProxyConn struct {
	// Local: the header's LOCAL command, which HAProxy's health checks send.
	Local bool
	// Src and Dst are the addresses the header carried (PROXY command).
	Src, Dst string
	// SSL: a PP2_TYPE_SSL TLV said the client connected over TLS; CN is its
	// PP2_SUBTYPE_SSL_CN (the client certificate's common name).
	SSL bool
	CN  string
	// Connect: a complete CONNECT arrived; ClientID is its client id.
	Connect  bool
	ClientID string
}

// StartProxyBroker listens on a free 127.0.0.1 port until the test ends.
func StartProxyBroker(t testing.TB, name string) *ProxyBroker {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &ProxyBroker{Name: name, Addr: l.Addr().String()}
	serve(t, l, b.handle)
	return b
}

// Conns returns the connections recorded so far (refused ones excluded).
func (b *ProxyBroker) Conns() []ProxyConn {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]ProxyConn(nil), b.conns...)
}

// Refused counts connections closed for want of a PROXY v2 header.
func (b *ProxyBroker) Refused() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.refused
}

func (b *ProxyBroker) handle(c net.Conn) {
	r := bufio.NewReader(c)
	pc, err := readProxyV2(r)
	if err != nil {
		b.mu.Lock()
		b.refused++
		b.mu.Unlock()
		return
	}
	idx := b.record(pc)
	pkt, err := readPacket(r)
	if err != nil || pkt.typ != 1 {
		return
	}
	id, v5, err := connectClientID(pkt.body)
	if err != nil {
		return
	}
	b.mu.Lock()
	b.conns[idx].Connect, b.conns[idx].ClientID = true, id
	b.mu.Unlock()
	connack := []byte{0x20, 2, 0, 0}
	if v5 {
		connack = []byte{0x20, 3, 0, 0, 0}
	}
	if _, err := c.Write(connack); err != nil {
		return
	}
	for {
		pkt, err := readPacket(r)
		if err != nil {
			return
		}
		switch pkt.typ {
		case 12: // PINGREQ
			_, err = c.Write([]byte{0xd0, 0})
		case 8: // SUBSCRIBE: grant QoS 0 to the first filter
			if len(pkt.body) >= 2 {
				_, err = c.Write([]byte{0x90, 3, pkt.body[0], pkt.body[1], 0})
			}
		case 14: // DISCONNECT
			return
		}
		if err != nil {
			return
		}
	}
}

func (b *ProxyBroker) record(pc ProxyConn) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.conns = append(b.conns, pc)
	return len(b.conns) - 1
}

// SilentBroker accepts TCP connections and never answers: a broker that
// still listens but no longer speaks MQTT. It records the client id of
// each CONNECT it receives.
type SilentBroker struct {
	Addr string

	mu        sync.Mutex
	accepted  int
	clientIDs []string // one per CONNECT, "" for an empty id
}

// StartSilentBroker listens on addr (a port another broker just left).
func StartSilentBroker(t testing.TB, addr string) *SilentBroker {
	t.Helper()
	var l net.Listener
	Eventually(t, 10*time.Second, func() (err error) {
		l, err = net.Listen("tcp", addr)
		return err
	})
	s := &SilentBroker{Addr: addr}
	serve(t, l, s.handle)
	return s
}

func (s *SilentBroker) handle(c net.Conn) {
	s.mu.Lock()
	s.accepted++
	s.mu.Unlock()
	r := bufio.NewReader(c)
	pkt, err := readPacket(r)
	if err != nil {
		return
	}
	if id, _, err := connectClientID(pkt.body); pkt.typ == 1 && err == nil {
		s.mu.Lock()
		s.clientIDs = append(s.clientIDs, id)
		s.mu.Unlock()
	}
	_, _ = io.Copy(io.Discard, r) // hold the connection, say nothing
}

// Stats returns the connections accepted and the client ids of the
// CONNECTs received. (HAProxy's TCP checks reset the connection before it
// is accepted: they do not count.)
func (s *SilentBroker) Stats() (accepted int, clientIDs []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accepted, append([]string(nil), s.clientIDs...)
}

// serve accepts on l until the test ends, then closes l and every
// connection it accepted.
func serve(t testing.TB, l net.Listener, handle func(net.Conn)) {
	var mu sync.Mutex
	open := map[net.Conn]bool{}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			open[c] = true
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() {
					mu.Lock()
					delete(open, c)
					mu.Unlock()
					c.Close()
				}()
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
}

var proxyV2Sig = []byte("\r\n\r\n\x00\r\nQUIT\n")

// readProxyV2 reads a PROXY protocol v2 header (haproxy doc/proxy-protocol.txt §2.2).
func readProxyV2(r *bufio.Reader) (ProxyConn, error) {
	var pc ProxyConn
	hdr := make([]byte, 16)
	// Byte by byte: a client without a header (a CONNECT shorter than the
	// header, waiting for its CONNACK) is refused at once, not left waiting.
	for i := range proxyV2Sig {
		c, err := r.ReadByte()
		if err != nil {
			return pc, err
		}
		if c != proxyV2Sig[i] {
			return pc, errors.New("no PROXY v2 signature")
		}
	}
	if _, err := io.ReadFull(r, hdr[12:]); err != nil {
		return pc, err
	}
	if hdr[12]>>4 != 2 {
		return pc, errors.New("not PROXY version 2")
	}
	body := make([]byte, binary.BigEndian.Uint16(hdr[14:]))
	if _, err := io.ReadFull(r, body); err != nil {
		return pc, err
	}
	switch hdr[12] & 0xf {
	case 0:
		pc.Local = true
		return pc, nil // LOCAL: addresses and TLVs are to be ignored
	case 1:
	default:
		return pc, fmt.Errorf("PROXY v2 command %d", hdr[12]&0xf)
	}
	var alen int
	switch hdr[13] {
	case 0x11: // TCP over IPv4
		alen = 4
	case 0x21: // TCP over IPv6
		alen = 16
	default:
		return pc, fmt.Errorf("PROXY v2 family %#x", hdr[13])
	}
	if len(body) < 2*alen+4 {
		return pc, errors.New("PROXY v2 addresses truncated")
	}
	src, dst := net.IP(body[:alen]), net.IP(body[alen:2*alen])
	ports := body[2*alen:]
	pc.Src = net.JoinHostPort(src.String(), strconv.Itoa(int(binary.BigEndian.Uint16(ports))))
	pc.Dst = net.JoinHostPort(dst.String(), strconv.Itoa(int(binary.BigEndian.Uint16(ports[2:]))))
	for tlvs := body[2*alen+4:]; len(tlvs) >= 3; {
		typ, n := tlvs[0], int(binary.BigEndian.Uint16(tlvs[1:3]))
		if len(tlvs) < 3+n {
			return pc, errors.New("PROXY v2 TLV truncated")
		}
		val := tlvs[3 : 3+n]
		tlvs = tlvs[3+n:]
		if typ != 0x20 || len(val) < 5 { // PP2_TYPE_SSL: client, verify, sub-TLVs
			continue
		}
		pc.SSL = val[0]&0x01 != 0 // PP2_CLIENT_SSL
		for sub := val[5:]; len(sub) >= 3; {
			st, sn := sub[0], int(binary.BigEndian.Uint16(sub[1:3]))
			if len(sub) < 3+sn {
				return pc, errors.New("PROXY v2 SSL sub-TLV truncated")
			}
			if st == 0x22 { // PP2_SUBTYPE_SSL_CN
				pc.CN = string(sub[3 : 3+sn])
			}
			sub = sub[3+sn:]
		}
	}
	return pc, nil
}

type packet struct {
	typ  byte
	body []byte
}

// readPacket reads one MQTT control packet (at most 64 KiB).
func readPacket(r *bufio.Reader) (packet, error) {
	first, err := r.ReadByte()
	if err != nil {
		return packet{}, err
	}
	n, mul := 0, 1
	for i := 0; ; i++ {
		b, err := r.ReadByte()
		if err != nil {
			return packet{}, err
		}
		n += int(b&0x7f) * mul
		if b&0x80 == 0 {
			break
		}
		if mul *= 128; i == 3 {
			return packet{}, errors.New("MQTT remaining length too long")
		}
	}
	if n > 64<<10 {
		return packet{}, fmt.Errorf("MQTT packet of %d bytes", n)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return packet{}, err
	}
	return packet{typ: first >> 4, body: body}, nil
}

// connectClientID returns the client id of a CONNECT's body, and whether
// it is MQTT 5.
func connectClientID(b []byte) (id string, v5 bool, err error) {
	short := errors.New("CONNECT truncated")
	if len(b) < 2 {
		return "", false, short
	}
	n := int(binary.BigEndian.Uint16(b))
	if len(b) < 2+n+4 {
		return "", false, short
	}
	level := b[2+n]
	b = b[2+n+4:] // protocol name, level, flags, keepalive
	if level == 5 {
		plen, used := 0, 0
		for mul := 1; used < 4; mul *= 128 {
			if used >= len(b) {
				return "", false, short
			}
			c := b[used]
			used++
			plen += int(c&0x7f) * mul
			if c&0x80 == 0 {
				break
			}
		}
		if len(b) < used+plen {
			return "", false, short
		}
		b = b[used+plen:]
	}
	if len(b) < 2 || len(b) < 2+int(binary.BigEndian.Uint16(b)) {
		return "", false, short
	}
	return string(b[2 : 2+int(binary.BigEndian.Uint16(b))]), level == 5, nil
}

// ProxyV2Header is the PROXY v2 header a load balancer in front of HAProxy
// sends for a TCP connection from src to dst (both IPv4 or both IPv6).
func ProxyV2Header(src, dst *net.TCPAddr) []byte {
	fam, s, d := byte(0x11), src.IP.To4(), dst.IP.To4()
	if s == nil || d == nil {
		fam, s, d = 0x21, src.IP.To16(), dst.IP.To16()
	}
	body := append(append([]byte{}, s...), d...)
	body = binary.BigEndian.AppendUint16(body, uint16(src.Port))
	body = binary.BigEndian.AppendUint16(body, uint16(dst.Port))
	h := append(append([]byte{}, proxyV2Sig...), 0x21, fam)
	h = binary.BigEndian.AppendUint16(h, uint16(len(body)))
	return append(h, body...)
}
