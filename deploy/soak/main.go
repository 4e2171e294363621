// Command soak drives a reconnect storm through HAProxy for a while and
// reports, every interval, what the stickyd agent holds: resident memory,
// goroutines and open sockets. They must stay flat. It is not part of CI:
// run it with deploy/soak/soak.sh, which starts the stack on Redis.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func main() { os.Exit(run()) }

func run() int {
	mqttAddr := flag.String("mqtt", "127.0.0.1:18830", "HAProxy's MQTT frontend")
	metricsURL := flag.String("metrics", "http://127.0.0.1:18880/metrics", "the agent's /metrics (for go_goroutines)")
	pid := flag.Int("pid", 0, "the stickyd process to watch")
	duration := flag.Duration("duration", 10*time.Minute, "how long to drive the storm")
	interval := flag.Duration("interval", 30*time.Second, "how often to report")
	workers := flag.Int("workers", 16, "concurrent clients")
	pool := flag.Int("ids", 5000, "client ids in the pool (most connects are reconnects)")
	flag.Parse()
	if *pid == 0 {
		fmt.Fprintln(os.Stderr, "soak: --pid is required")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *duration)
	defer cancel()

	var ok, failed atomic.Uint64
	var wg sync.WaitGroup
	for w := 0; w < *workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; ctx.Err() == nil; i += *workers {
				if err := connectOnce(*mqttAddr, fmt.Sprintf("soak-%06d", i%*pool)); err != nil {
					failed.Add(1)
					continue
				}
				ok.Add(1)
			}
		}(w)
	}

	fmt.Printf("%8s %10s %8s %10s %10s %8s\n", "elapsed", "conn/s", "failed", "rss_mib", "goroutines", "sockets")
	start := time.Now()
	last, lastAt := uint64(0), start
	report := func() {
		now := time.Now()
		n := ok.Load()
		rate := float64(n-last) / now.Sub(lastAt).Seconds()
		last, lastAt = n, now
		fmt.Printf("%8s %10.0f %8d %10.1f %10s %8d\n", now.Sub(start).Round(time.Second), rate, failed.Load(),
			float64(rssKiB(*pid))/1024, goroutines(*metricsURL), sockets(*pid))
	}
	report()
	t := time.NewTicker(*interval)
	defer t.Stop()
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-t.C:
			report()
		}
	}
	wg.Wait()
	report()
	fmt.Printf("total: %d connections, %d failed\n", ok.Load(), failed.Load())
	if failed.Load() > 0 {
		return 1
	}
	return 0
}

// connectOnce is a bare MQTT 3.1.1 CONNECT, CONNACK, DISCONNECT: the load
// generator must cost far less than what it measures.
func connectOnce(addr, id string) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	body := []byte{0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 60, byte(len(id) >> 8), byte(len(id))}
	body = append(body, id...)
	pkt := append([]byte{0x10, byte(len(body))}, body...) // ids < 115 bytes: one-byte length
	if _, err := c.Write(pkt); err != nil {
		return err
	}
	ack := make([]byte, 4)
	if _, err := io.ReadFull(c, ack); err != nil {
		return fmt.Errorf("connack: %w", err)
	}
	if ack[0] != 0x20 || ack[3] != 0 {
		return fmt.Errorf("connack refused: % x", ack)
	}
	_, err = c.Write([]byte{0xe0, 0})
	return err
}

func rssKiB(pid int) int {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.Fields(v)[0])
			return n
		}
	}
	return -1
}

func sockets(pid int) int {
	fds, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", pid))
	n := 0
	for _, fd := range fds {
		if l, err := os.Readlink(fd); err == nil && strings.HasPrefix(l, "socket:") {
			n++
		}
	}
	return n
}

func goroutines(url string) string {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "-"
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			return strings.TrimSpace(v)
		}
	}
	return "-"
}
