package e2e

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stickyd/stickyd/internal/spoptest"
	"github.com/stickyd/stickyd/internal/testenv"
)

// An MQTT 5 client's session expiry sets its binding's TTL exactly, as
// HAProxy sends it (decimal text typed binary): the larger of ttl (30s
// here, so every expiry above it shows) and the expiry, which max_ttl caps.
func TestMQTT5SessionExpiryTTL(t *testing.T) {
	const maxTTL = 48 * 3600
	s := newStack(t, stackOpts{ttl: "30s", extra: fmt.Sprintf("max_ttl: %ds\n", maxTTL)})
	bin := testenv.RequireBinary(t, "mosquitto_sub")
	host, port, _ := net.SplitHostPort(s.feAddr)
	c := s.api()
	for _, tc := range []struct {
		name string
		args []string // mosquitto_sub's protocol and session expiry
		want float64  // ttl_seconds right after the connect
	}{
		{"mqtt 3.1.1", []string{"-V", "mqttv311"}, 30},
		{"mqtt 5, no session expiry", []string{"-V", "mqttv5"}, 30},
		{"mqtt 5, 0", []string{"-V", "mqttv5", "-x", "0"}, 30},
		{"mqtt 5, 60", []string{"-V", "mqttv5", "-x", "60"}, 60},
		{"mqtt 5, 3600", []string{"-V", "mqttv5", "-x", "3600"}, 3600},
		{"mqtt 5, 7200", []string{"-V", "mqttv5", "-x", "7200"}, 7200},
		{"mqtt 5, 86400", []string{"-V", "mqttv5", "-x", "86400"}, 86400},
		// MQTT's "never expires" is capped by max_ttl.
		{"mqtt 5, 4294967295", []string{"-V", "mqttv5", "-x", "4294967295"}, maxTTL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := "sexp-" + strings.ReplaceAll(tc.name, " ", "_")
			args := append([]string{"-h", host, "-p", port, "-t", testenv.NodeTopic, "-C", "1", "-W", "10", "-i", id}, tc.args...)
			if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
				t.Fatalf("mosquitto_sub %v: %v\n%s", args, err, out)
			}
			code, b := c.do("GET", "/v1/backends/mqtt/bindings/"+id, nil)
			if code != http.StatusOK {
				t.Fatalf("binding: %d %v", code, b)
			}
			// The remaining TTL: exact but for the seconds since the connect.
			if got := b["ttl_seconds"].(float64); got > tc.want || got < tc.want-10 {
				t.Fatalf("ttl_seconds %v, want %v (less the seconds since the connect)", got, tc.want)
			}
		})
	}
}

// 3000 connections that send a HELLO and then part of a 65 KB frame (and
// never the rest) cost the agent what they sent, not what they promised:
// its RSS stays under 150 MiB while MQTT clients connect through HAProxy
// and stay on their node.
func TestSPOEPortUnderPartialFrames(t *testing.T) {
	const (
		conns    = 3000
		promised = 65000 // the frame's announced length
		sent     = 1000  // of which sent
		maxRSS   = 150 << 20
	)
	raiseNoFile(t, conns+1000)
	s := newStack(t, stackOpts{quiet: true, extra: "spoe_max_connections: 4000\nspoe_frame_timeout: 2m\n"})
	pid := s.stickyd.Cmd.Process.Pid
	if n := openFilesLimit(t, pid); n < conns+500 {
		t.Fatalf("stickyd may open %d files, fewer than the %d connections of this test", n, conns)
	}
	clients := ids("flood", 40)
	home := s.connectAll(clients)
	before := rss(t, pid)

	stop := make(chan struct{})
	st := startStorm(t, []string{s.feAddr}, clients, 2, stop)
	hello := spoptest.Frame(spoptest.FrameHAProxyHello, spoptest.FlagFin, 0, 0, spoptest.AppendKVs(nil, []spoptest.KV{
		{Name: "supported-versions", Value: "2.0"}, {Name: "max-frame-size", Value: uint32(65536)},
		{Name: "capabilities", Value: "pipelining"}, {Name: "engine-id", Value: "flood"}}))
	partial := binary.BigEndian.AppendUint32(nil, promised)
	partial = append(append(partial, spoptest.FrameNotify, 0, 0, 0, spoptest.FlagFin, 1, 1), make([]byte, sent-7)...)
	// Twice: the second round's buffers reuse the memory the first freed,
	// which the Go runtime zeroes, so all a buffer promised is resident:
	// what a peer that cycles its connections makes of an up-front buffer.
	for _, c := range openPartial(t, s.spoeAddr, conns, hello, partial) {
		c.Close()
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		if n := spoeGauge(t, s.apiAddr); n >= 100 {
			return fmt.Errorf("%v SPOE connections still open", n)
		}
		return nil
	})
	held := openPartial(t, s.spoeAddr, conns, hello, partial)
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()

	// Every connection is held by the agent now, each part-way into its
	// frame; HAProxy's own connections come on top.
	if n := spoeGauge(t, s.apiAddr); n < conns {
		t.Fatalf("stickyd_spoe_connections %v, want at least %d", n, conns)
	}
	close(stop)
	total, failures, nodes := st.wait()
	during := s.connectAll(clients) // not while the storm runs: one id at a time
	after := rss(t, pid)
	t.Logf("agent RSS: %.1f MiB before, %.1f MiB with %d partial-frame connections (%.1f KiB each); %d MQTT connects during the flood, %d after",
		float64(before)/(1<<20), float64(after)/(1<<20), conns, float64(after-before)/conns/1024, total, len(clients))
	if after >= maxRSS {
		t.Fatalf("agent RSS %d MiB with %d partial frames, want under %d MiB", after>>20, conns, maxRSS>>20)
	}
	if len(failures) > 0 {
		t.Fatalf("%d of %d MQTT connects failed during the flood, first: %v", len(failures), total, failures[0])
	}
	for _, id := range clients {
		if during[id] != home[id] {
			t.Fatalf("%s moved from %s to %s during the flood", id, home[id], during[id])
		}
		for node := range nodes[id] {
			if node != home[id] {
				t.Fatalf("%s reached %s during the flood, bound to %s", id, node, home[id])
			}
		}
	}
}

// openPartial opens n connections to addr, each sending hello, reading the
// AGENT-HELLO and sending partial; it returns them open.
func openPartial(t *testing.T, addr string, n int, hello, partial []byte) []net.Conn {
	t.Helper()
	out := make([]net.Conn, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	next := make(chan int)
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				c, err := openOne(addr, hello, partial)
				if err != nil {
					errs <- fmt.Errorf("connection %d: %w", i, err)
					continue
				}
				out[i] = c
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		for _, c := range out {
			if c != nil {
				c.Close()
			}
		}
		t.Fatal(err)
	}
	return out
}

func openOne(addr string, hello, partial []byte) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	var hdr [5]byte
	if _, err = c.Write(hello); err == nil {
		if _, err = io.ReadFull(c, hdr[:]); err == nil && hdr[4] != 101 {
			err = fmt.Errorf("frame type %d, want AGENT-HELLO", hdr[4])
		}
	}
	if err == nil {
		// The rest of the AGENT-HELLO stays unread in the socket buffer.
		_, err = c.Write(partial)
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// raiseNoFile makes sure this process, and the programs it starts, may
// open n files: Go raises its own soft limit but gives children the
// original one unless the limit was set explicitly.
func raiseNoFile(t *testing.T, n uint64) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Max < n {
		t.Fatalf("open-files hard limit %d, this test needs %d (raise it: ulimit -Hn)", lim.Max, n)
	}
	lim.Cur = max(lim.Cur, n)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
}

// openFilesLimit reads a process's soft open-files limit.
func openFilesLimit(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Max open files"); ok {
			f := strings.Fields(rest) // soft, hard, "files"
			n, err := strconv.Atoi(f[0])
			if err != nil {
				t.Fatalf("limits: %q", line)
			}
			return n
		}
	}
	t.Fatal("no open-files limit in /proc/<pid>/limits")
	return 0
}

// rss reads a process's resident set size (VmRSS) in bytes.
func rss(t *testing.T, pid int) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("VmRSS: %q", rest)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS in /proc/<pid>/status")
	return 0
}

// spoeGauge reads stickyd_spoe_connections from the agent's /metrics.
func spoeGauge(t *testing.T, apiAddr string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + apiAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "stickyd_spoe_connections "); ok {
			v, err := strconv.ParseFloat(rest, 64)
			if err != nil {
				t.Fatalf("stickyd_spoe_connections %q", rest)
			}
			return v
		}
	}
	t.Fatal("no stickyd_spoe_connections in /metrics")
	return 0
}
