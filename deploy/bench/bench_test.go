package main

import (
	"bufio"
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/stickyd/stickyd/internal/spoptest"
)

func TestConnectRoundTrip(t *testing.T) {
	for _, level := range []byte{mqtt311, mqtt5} {
		for _, id := range []string{"", "device-10000000000000042", strings.Repeat("x", 300)} {
			pkt := appendConnect(nil, level, id)
			h, body, err := readPacket(bufio.NewReader(bytes.NewReader(pkt)), make([]byte, 0, 512))
			if err != nil || h != pktConnect {
				t.Fatalf("level %d, id of %d bytes: header %#x, %v", level, len(id), h, err)
			}
			gotLevel, gotID, err := parseConnect(body)
			if err != nil || gotLevel != level || gotID != id {
				t.Fatalf("level %d: got level %d id %q, %v", level, gotLevel, gotID, err)
			}
		}
	}
}

func TestConnackShapes(t *testing.T) {
	for _, level := range []byte{mqtt311, mqtt5} {
		pkt := appendConnack(nil, level, "n2")
		h, body, err := readPacket(bufio.NewReader(bytes.NewReader(pkt)), make([]byte, 0, 64))
		if err != nil || h != pktConnack || len(body) < 2 || body[1] != 0 {
			t.Fatalf("level %d: % x (%v)", level, pkt, err)
		}
		if level == mqtt5 && !bytes.HasSuffix(body, []byte("node\x00\x02n2")) {
			t.Fatalf("MQTT 5 CONNACK does not name the node: % x", body)
		}
	}
}

func TestParseConnectRefusesGarbage(t *testing.T) {
	for _, body := range [][]byte{nil, []byte("\x00\x04HTTP\x04\x02\x00\x3c\x00\x01a"), {0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 60, 0, 9, 'a'}} {
		if _, _, err := parseConnect(body); err == nil {
			t.Fatalf("accepted % x", body)
		}
	}
}

// The ledger counts a reconnect to another node as not sticky.
func TestBrokersAndLedger(t *testing.T) {
	led := newLedger()
	brokers, err := startBrokers(led)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, b := range brokers {
			b.l.Close()
		}
	}()
	cycle := func(b *broker, level byte) {
		t.Helper()
		if _, err := newClient(b.addr()).cycle(level, "dev-1"); err != nil {
			t.Fatalf("%s: %v", b.name, err)
		}
	}
	cycle(brokers[0], mqtt311) // first connect: not counted
	led.begin()
	cycle(brokers[0], mqtt5)
	cycle(brokers[1], mqtt311)
	if re, sticky := led.end(); re != 2 || sticky != 1 {
		t.Fatalf("reconnects %d, sticky %d; want 2 and 1", re, sticky)
	}
}

func TestPercentileAndMedian(t *testing.T) {
	var v []time.Duration
	for i := 1; i <= 100; i++ {
		v = append(v, time.Duration(i))
	}
	if p := percentile(v, 0.99); p != 99 {
		t.Fatalf("p99 %d", p)
	}
	if p := percentile(v, 0.50); p != 50 {
		t.Fatalf("p50 %d", p)
	}
	if m := median([]float64{3, 1, 2, 10}); m != 2.5 {
		t.Fatalf("median %v", m)
	}
}

// Ratios are taken within a cycle, then their median.
func TestSummariseRatiosPerCycle(t *testing.T) {
	r := func(k kind, cycle, conns int, p99 time.Duration) roundResult {
		return roundResult{kind: k, cycle: cycle, conns: conns, elapsed: time.Second, p99: p99}
	}
	sums := summarise([]roundResult{
		r(kindNative, 0, 1000, 4*time.Millisecond), r(kindRedis, 0, 900, 5*time.Millisecond),
		r(kindNative, 1, 500, 4*time.Millisecond), r(kindRedis, 1, 450, 7*time.Millisecond),
		r(kindNative, 2, 800, 4*time.Millisecond), r(kindRedis, 2, 720, 6*time.Millisecond),
	})
	if len(sums) != 2 || sums[1].kind != kindRedis {
		t.Fatalf("%+v", sums)
	}
	if s := sums[1]; s.ratio < 0.8999 || s.ratio > 0.9001 || s.dp99 != 2*time.Millisecond || s.rate != 720 {
		t.Fatalf("ratio %v, p99 difference %v, rate %v", s.ratio, s.dp99, s.rate)
	}
}

func TestAckHasAction(t *testing.T) {
	bare := []byte{103, 0, 0, 0, 1, 0xf5, 0x20, 1}                                                        // stream-id over 240
	set := append(append([]byte(nil), bare...), 1, 3, 1, 6, 's', 'e', 'r', 'v', 'e', 'r', 8, 2, 'n', '1') // set-var
	if ackHasAction(bare) || !ackHasAction(set) {
		t.Fatalf("bare %v, with set-var %v", ackHasAction(bare), ackHasAction(set))
	}
}

func TestNotifyFrameLength(t *testing.T) {
	f := appendNotify(nil, 300, []byte("device-1"))
	if n := int(f[0])<<24 | int(f[1])<<16 | int(f[2])<<8 | int(f[3]); n != len(f)-4 {
		t.Fatalf("length prefix %d for a %d-byte body", n, len(f)-4)
	}
	if f[4] != spoptest.FrameNotify {
		t.Fatalf("type %d", f[4])
	}
}
