package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"
)

type report struct {
	opts       options
	machine    string
	reconnects []roundResult
	fresh      []roundResult
	alone      []aloneResult
	scale      *scaleResult
}

// summary is one configuration over a series of rounds.
type summary struct {
	kind          kind
	rounds        int
	rate          float64 // median conn/s
	ratio         float64 // median over cycles of rate / native's rate
	p50, p99, max time.Duration
	dp99          time.Duration // median over cycles of p99 - native's p99
	failed        int
	reconnects    uint64
	sticky        uint64
	conns         int
	cpu           map[string]time.Duration
	agentRSS      int64
}

// summarise takes medians per configuration. Ratios and p99 differences
// are taken within each cycle (rounds that ran next to each other), then
// their median: that is what the alternating order is for.
func summarise(rounds []roundResult) []summary {
	native := map[int]roundResult{}
	for _, r := range rounds {
		if r.kind == kindNative {
			native[r.cycle] = r
		}
	}
	var out []summary
	for _, k := range kinds {
		s := summary{kind: k, cpu: map[string]time.Duration{}}
		var rates, ratios []float64
		var p50s, p99s, dp99s []time.Duration
		for _, r := range rounds {
			if r.kind != k {
				continue
			}
			s.rounds++
			rates = append(rates, r.rate())
			p50s, p99s = append(p50s, r.p50), append(p99s, r.p99)
			s.max = max(s.max, r.max)
			if n, ok := native[r.cycle]; ok && n.rate() > 0 {
				ratios = append(ratios, r.rate()/n.rate())
				dp99s = append(dp99s, r.p99-n.p99)
			}
			s.failed += r.failed
			s.reconnects += r.reconnects
			s.sticky += r.sticky
			s.conns += r.conns
			for name, d := range r.cpu {
				s.cpu[name] += d
			}
			s.agentRSS = max(s.agentRSS, r.agentRSS)
		}
		if s.rounds == 0 {
			continue
		}
		s.rate, s.ratio = median(rates), median(ratios)
		s.p50, s.p99, s.dp99 = median(p50s), median(p99s), median(dp99s)
		out = append(out, s)
	}
	return out
}

func median[T float64 | time.Duration](v []T) T {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// cpuPerConn is a process's CPU per successful connection, in µs.
func (s summary) cpuPerConn(name string) string {
	d, ok := s.cpu[name]
	if !ok || s.conns == 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f", float64(d)/float64(time.Microsecond)/float64(s.conns))
}

// cpuPerConnTotal is the CPU every process of the configuration spent per
// successful connection: what bounds the rate on a saturated machine.
func (s summary) cpuPerConnTotal() float64 {
	if s.conns == 0 {
		return 0
	}
	var sum time.Duration
	for _, d := range s.cpu {
		sum += d
	}
	return float64(sum) / float64(s.conns)
}

func (s summary) stickiness() string {
	if s.reconnects == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f%%", 100*float64(s.sticky)/float64(s.reconnects))
}

func (r *report) markdown() string {
	var b strings.Builder
	o := r.opts
	fmt.Fprintf(&b, "## Benchmark results\n\n")
	fmt.Fprintf(&b, "Machine: %s.\n\n", r.machine)
	fmt.Fprintf(&b, "Load: %d concurrent clients, each looping TCP connect, CONNECT (half MQTT 3.1.1, half MQTT 5), "+
		"CONNACK, DISCONNECT; %s rounds, configurations in alternating order (A B C D D C B A ...); "+
		"two fake broker nodes per configuration that answer at once.\n\n", o.workers, o.round)
	if len(r.reconnects) > 0 {
		fmt.Fprintf(&b, "### Reconnect storm: %d client ids, every connect a reconnect (%d rounds each)\n\n", o.ids, o.cycles)
		writeTable(&b, summarise(r.reconnects))
	}
	if len(r.fresh) > 0 {
		fmt.Fprintf(&b, "\n### New clients: every connect a first placement (%d rounds each)\n\n", o.newCycles)
		writeTable(&b, summarise(r.fresh))
	}
	if len(r.alone) > 0 {
		fmt.Fprintf(&b, "\n### The agent alone: warm bindings over SPOE, no HAProxy (%d connections, one frame in flight on each)\n\n", aloneConns)
		fmt.Fprintln(&b, "| agent | decisions/s | agent CPU µs/decision | Redis CPU µs/decision |")
		fmt.Fprintln(&b, "|---|---:|---:|---:|")
		for _, a := range r.alone {
			redis := "–"
			if a.kind.redis() {
				redis = fmt.Sprintf("%.1f", us(a.redisCPU))
			}
			fmt.Fprintf(&b, "| %s | %.0f | %.1f | %s |\n", a.kind, a.rate, us(a.agentCPU), redis)
		}
	}
	if s := r.scale; s != nil {
		fmt.Fprintf(&b, "\n### Memory at scale\n\n| measure | value |\n|---|---:|\n")
		fmt.Fprintf(&b, "| Redis: bytes per binding (used_memory growth / bindings, %s bindings in %s bucket keys, 24-byte ids, TTL 30m) | %.0f |\n",
			thousands(s.redisPlaced), thousands(s.redisKeys), s.bytesPerBinding())
		fmt.Fprintf(&b, "| Redis: used_memory with those bindings | %s |\n", mib(s.redisUsed))
		fmt.Fprintf(&b, "| agent RSS, memory store: empty → %s bindings | %s → %s |\n", thousands(s.memPlaced), mib(s.memRSS0), mib(s.memRSS))
		fmt.Fprintf(&b, "| agent RSS, memory store: growth per binding | %.0f B |\n", float64(s.memRSS-s.memRSS0)/float64(max(s.memPlaced, 1)))
		fmt.Fprintf(&b, "| agent RSS, Redis store: start → peak during %s placements → end | %s → %s → %s |\n",
			thousands(s.redisPlaced), mib(s.redisRSS0), mib(s.redisRSSPeak), mib(s.redisRSS))
		if sums := summarise(r.reconnects); len(sums) > 0 {
			for _, sm := range sums {
				if sm.kind == kindRedis {
					fmt.Fprintf(&b, "| agent RSS, Redis store: peak during the reconnect storm above | %s |\n", mib(sm.agentRSS))
				}
			}
		}
		fmt.Fprintf(&b, "| placements through SPOE (no HAProxy), memory / Redis | %.0f/s / %.0f/s |\n", s.memRate, s.redisRate)
	}
	return b.String()
}

func writeTable(b *strings.Builder, sums []summary) {
	var nativeCPU float64
	for _, s := range sums {
		if s.kind == kindNative {
			nativeCPU = s.cpuPerConnTotal()
		}
	}
	fmt.Fprintln(b, "| configuration | conn/s | × native | × native, CPU | p50 ms | p99 ms | p99 − native ms | max ms | failed | sticky | CPU µs/conn: HAProxy | stickyd | Redis | load + brokers |")
	fmt.Fprintln(b, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, s := range sums {
		ratio, cpuRatio, dp99 := "–", "–", "–"
		if s.ratio > 0 {
			ratio, dp99 = fmt.Sprintf("%.3f", s.ratio), fmt.Sprintf("%+.2f", ms(s.dp99))
		}
		if t := s.cpuPerConnTotal(); nativeCPU > 0 && t > 0 {
			cpuRatio = fmt.Sprintf("%.3f", nativeCPU/t)
		}
		fmt.Fprintf(b, "| %s | %.0f | %s | %s | %.2f | %.2f | %s | %.1f | %d | %s | %s | %s | %s | %s |\n",
			s.kind, s.rate, ratio, cpuRatio, ms(s.p50), ms(s.p99), dp99, ms(s.max), s.failed, s.stickiness(),
			s.cpuPerConn("haproxy"), s.cpuPerConn("stickyd"), s.cpuPerConn("redis"), s.cpuPerConn("bench"))
	}
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

func thousands(n int64) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// machineInfo names the CPU, cores, kernel and program versions.
func machineInfo(ctx context.Context, o options) string {
	cpu := "unknown CPU"
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return fmt.Sprintf("%s, %d cores, Linux %s, %s, HAProxy %s, Redis %s, %s",
		cpu, runtime.NumCPU(), strings.TrimSpace(string(kernel)), runtime.Version(),
		version(ctx, o.haproxy, "-v", "version "), version(ctx, o.redisServer, "--version", "v="),
		time.Now().UTC().Format("2006-01-02 15:04 MST"))
}

// version runs bin with flag and returns the word after marker.
func version(ctx context.Context, bin, flag, marker string) string {
	out, err := exec.CommandContext(ctx, bin, flag).Output()
	if err != nil {
		return "?"
	}
	_, after, _ := strings.Cut(string(out), marker)
	if f := strings.Fields(after); len(f) > 0 {
		return f[0]
	}
	return "?"
}
