// Command bench measures stickyd side by side with HAProxy's own stick
// table: connection rate, CONNECT-to-CONNACK latency, failures and
// stickiness of an MQTT reconnect storm through HAProxy with
//
//   - a native stick table (stick on the CONNECT's client id),
//   - stickyd on its embedded memory store,
//   - stickyd on Redis,
//   - round robin, no stickiness (the cost of the load balancer alone),
//
// in alternating rounds (A B C D D C B A ...) so that the machine's drift
// cancels in the ratios; then memory at scale (Redis bytes per binding and
// agent RSS at a million bindings). It starts everything itself on free
// loopback ports (fake brokers in process, redis-server, stickyd, haproxy),
// prints a table and writes it as Markdown. `make bench` runs it; see
// README.md in this directory.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

type options struct {
	stickyd, haproxy, redisServer string
	workers, ids                  int
	round                         time.Duration
	cycles, newCycles             int
	scale                         int
	out                           string
	keep                          bool
	kinds                         []kind
}

func main() { os.Exit(run()) }

func run() int {
	var o options
	flag.StringVar(&o.stickyd, "stickyd", "bin/stickyd", "the stickyd binary (make build)")
	flag.StringVar(&o.haproxy, "haproxy", "haproxy", "the haproxy binary")
	flag.StringVar(&o.redisServer, "redis-server", "redis-server", "the redis-server binary")
	flag.IntVar(&o.workers, "workers", 32, "concurrent MQTT clients")
	flag.IntVar(&o.ids, "ids", 5000, "client ids in the reconnect pool")
	flag.DurationVar(&o.round, "round", 8*time.Second, "length of one measured round")
	flag.IntVar(&o.cycles, "cycles", 4, "rounds per configuration on reconnects")
	flag.IntVar(&o.newCycles, "new-cycles", 2, "rounds per configuration with new client ids (0: skip)")
	flag.IntVar(&o.scale, "scale", 1_000_000, "bindings for the memory-at-scale measures (0: skip)")
	flag.StringVar(&o.out, "out", "bin/bench-results.md", "where to write the Markdown results")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary directory (configurations and logs)")
	configs := flag.String("configs", "native,memory,redis,roundrobin,memory-nofast,redis-nofast", "configurations to run (ratios need native)")
	flag.Parse()
	var err error
	if o.kinds, err = parseKinds(*configs); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 2
	}
	if o.workers < 1 || o.ids < o.workers || o.cycles < 1 || o.round <= 0 {
		fmt.Fprintln(os.Stderr, "bench: need --workers >= 1, --ids >= --workers, --cycles >= 1, --round > 0")
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	b, err := newBench(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	defer b.close()
	rep, err := b.run(ctx)
	if err != nil {
		if errors.Is(err, context.Canceled) {
			fmt.Fprintln(os.Stderr, "bench: interrupted; stopping everything it started")
			return 130
		}
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	md := rep.markdown()
	fmt.Println()
	fmt.Print(md)
	if err := os.MkdirAll(filepath.Dir(o.out), 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	if err := os.WriteFile(o.out, []byte(md), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	fmt.Printf("\nwritten to %s\n", o.out)
	return 0
}

// bench holds what a run started, so close can stop all of it.
type bench struct {
	opts      options
	dir       string
	procs     []*proc
	brokers   []*broker
	redis     *proc
	redisAddr string
	targets   []*target
}

func newBench(o options) (*bench, error) {
	for _, bin := range []*string{&o.stickyd, &o.haproxy, &o.redisServer} {
		p, err := lookPath(*bin)
		if err != nil {
			return nil, err
		}
		*bin = p
	}
	dir, err := os.MkdirTemp("", "stickyd-bench-")
	if err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	return &bench{opts: o, dir: dir}, nil
}

// start runs a program and registers it for close.
func (b *bench) start(dir, name, bin string, args ...string) (*proc, error) {
	p, err := startProc(dir, name, bin, args...)
	if err != nil {
		return nil, err
	}
	b.procs = append(b.procs, p)
	return p, nil
}

// close stops every process in reverse start order, closes the brokers and
// removes the temporary directory (unless --keep).
func (b *bench) close() {
	for i := len(b.procs) - 1; i >= 0; i-- {
		b.procs[i].stop()
	}
	for _, br := range b.brokers {
		_ = br.l.Close()
	}
	if b.opts.keep {
		fmt.Fprintln(os.Stderr, "bench: kept", b.dir)
		return
	}
	_ = os.RemoveAll(b.dir)
}

func (b *bench) run(ctx context.Context) (*report, error) {
	rep := &report{opts: b.opts, machine: machineInfo(ctx, b.opts)}
	logf("machine: %s", rep.machine)
	if err := b.startRedis(ctx); err != nil {
		return nil, err
	}
	for _, k := range b.opts.kinds {
		t, err := b.setup(ctx, k)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", k, err)
		}
		b.targets = append(b.targets, t)
	}
	logf("warm-up: %d client ids through each configuration", b.opts.ids)
	for _, t := range b.targets {
		if err := b.warmUp(ctx, t); err != nil {
			return nil, err
		}
	}
	var err error
	if rep.reconnects, err = b.series(ctx, modeReconnect, b.opts.cycles); err != nil {
		return nil, err
	}
	if b.opts.newCycles > 0 {
		if rep.fresh, err = b.series(ctx, modeNew, b.opts.newCycles); err != nil {
			return nil, err
		}
	}
	if rep.alone, err = b.alone(ctx); err != nil {
		return nil, err
	}
	if b.opts.scale > 0 {
		if rep.scale, err = b.scale(ctx); err != nil {
			return nil, err
		}
	}
	return rep, nil
}

// series runs cycles rounds of every target, alternating the order.
func (b *bench) series(ctx context.Context, m mode, cycles int) ([]roundResult, error) {
	var out []roundResult
	for c := range cycles {
		for i := range b.targets {
			t := b.targets[i]
			if c%2 == 1 {
				t = b.targets[len(b.targets)-1-i]
			}
			r, err := b.round(ctx, t, m, c)
			if err != nil {
				return nil, fmt.Errorf("%s, %s round %d: %w", t.kind, m, c+1, err)
			}
			logf("[%s %d/%d] %-20s %7.0f conn/s  p50 %6.2f ms  p99 %6.2f ms  max %7.2f ms  failed %d%s",
				m, c+1, cycles, t.kind, r.rate(), ms(r.p50), ms(r.p99), ms(r.max), r.failed, stickyNote(r))
			if r.firstErr != nil {
				logf("    first failure: %v", r.firstErr)
			}
			out = append(out, r)
		}
	}
	return out, nil
}

func (b *bench) startRedis(ctx context.Context) error {
	var err error
	if b.redisAddr, err = freeAddr(); err != nil {
		return err
	}
	_, port, _ := net.SplitHostPort(b.redisAddr)
	dir := filepath.Join(b.dir, "redis-server")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	b.redis, err = b.start(dir, "redis-server", b.opts.redisServer,
		"--bind", "127.0.0.1", "--port", port, "--dir", dir, "--save", "", "--appendonly", "no")
	if err != nil {
		return err
	}
	return waitTCP(ctx, b.redis, b.redisAddr, 15*time.Second)
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func stickyNote(r roundResult) string {
	if r.reconnects == 0 {
		return ""
	}
	return fmt.Sprintf("  sticky %.2f%%", 100*float64(r.sticky)/float64(r.reconnects))
}
