package testenv

import (
	"bufio"
	"bytes"
	"net"
	"testing"
)

func TestProxyV2HeaderRoundTrip(t *testing.T) {
	for _, tc := range []struct{ src, dst string }{
		{"203.0.113.7:4242", "198.51.100.1:1883"},
		{"[2001:db8::7]:4242", "[2001:db8::ffff]:8883"},
	} {
		src, _ := net.ResolveTCPAddr("tcp", tc.src)
		dst, _ := net.ResolveTCPAddr("tcp", tc.dst)
		pc, err := readProxyV2(bufio.NewReader(bytes.NewReader(ProxyV2Header(src, dst))))
		if err != nil || pc.Local || pc.Src != tc.src || pc.Dst != tc.dst {
			t.Errorf("%s -> %s: %+v %v", tc.src, tc.dst, pc, err)
		}
	}
	// HAProxy's health check with send-proxy-v2-ssl-cn: LOCAL, an SSL TLV.
	local := []byte("\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x08\x20\x00\x05\x00\x00\x00\x00\x00")
	if pc, err := readProxyV2(bufio.NewReader(bytes.NewReader(local))); err != nil || !pc.Local {
		t.Errorf("LOCAL: %+v %v", pc, err)
	}
	if _, err := readProxyV2(bufio.NewReader(bytes.NewReader([]byte("\x10\x0c\x00\x04MQTT\x04\x02\x00\x0a\x00\x00")))); err == nil {
		t.Error("a bare CONNECT passed as a PROXY header")
	}
}

// The fake brokers' parsers never panic or over-read, whatever arrives.
func FuzzFakeBrokerParsers(f *testing.F) {
	src, _ := net.ResolveTCPAddr("tcp", "[2001:db8::7]:4242")
	f.Add(ProxyV2Header(src, src))
	f.Add([]byte("\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x14\x7f\x00\x00\x01\x7f\x00\x00\x01\x00\x01\x00\x02\x20\x00\x05\x01"))
	f.Add([]byte("\x10\x0c\x00\x04MQTT\x05\x02\x00\x0a\x05\x11\x00\x00\x00\x0a\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = readProxyV2(bufio.NewReader(bytes.NewReader(b)))
		if p, err := readPacket(bufio.NewReader(bytes.NewReader(b))); err == nil {
			_, _, _ = connectClientID(p.body)
		}
		_, _, _ = connectClientID(b)
	})
}
