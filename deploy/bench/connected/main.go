// Command connected measures the refresh that keeps connected clients'
// bindings alive, at N connected clients: the Runtime API dump of HAProxy's
// table of connected keys, and one full refresh cycle (dump, id lookup,
// pipelined conditional writes into Redis) with its agent CPU and Redis
// operations. It starts its own haproxy and redis-server on free loopback
// ports in a temporary directory and stops them at the end.
//
//	go run ./deploy/bench/connected --n 1000000
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/stickyd/stickyd/agent"
	"github.com/stickyd/stickyd/config"
	"github.com/stickyd/stickyd/haproxy"
	"github.com/stickyd/stickyd/internal/tablekey"
	"github.com/stickyd/stickyd/store"
	"github.com/stickyd/stickyd/store/redis"
)

func main() {
	n := flag.Int("n", 1_000_000, "connected clients")
	flag.Parse()
	if err := run(*n); err != nil {
		fmt.Fprintln(os.Stderr, "connected:", err)
		os.Exit(1)
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func start(name string, args ...string) (*exec.Cmd, error) {
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
	return cmd, cmd.Start()
}

func stop(cmd *exec.Cmd) {
	_ = cmd.Process.Signal(syscall.SIGTERM)
	_ = cmd.Wait()
}

func cpu() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func id(i int) string { return fmt.Sprintf("device-%08d", i) }

func run(n int) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "stickyd-connected-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	rport, err := freePort()
	if err != nil {
		return err
	}
	rd, err := start("redis-server", "--port", strconv.Itoa(rport), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir)
	if err != nil {
		return err
	}
	defer stop(rd)
	sock := filepath.Join(dir, "admin.sock")
	hcfg := fmt.Sprintf("global\n    stats socket %s level admin\n    stats timeout 5m\ndefaults\n    mode tcp\n    timeout connect 1s\n    timeout client 30s\n    timeout server 30s\nbackend mqtt%s\n    stick-table type string len 32 size %d expire 1h store conn_cur\n",
		sock, haproxy.ConnectedSuffix, n)
	if err := os.WriteFile(filepath.Join(dir, "h.cfg"), []byte(hcfg), 0o644); err != nil {
		return err
	}
	hp, err := start("haproxy", "-db", "-f", filepath.Join(dir, "h.cfg"))
	if err != nil {
		return err
	}
	defer stop(hp)
	rt, err := haproxy.NewRuntimeAPI(sock, 5*time.Second)
	if err != nil {
		return err
	}
	var st *redis.Store
	for deadline := time.Now().Add(15 * time.Second); ; {
		_, herr := rt.Command(ctx, "show info")
		if herr == nil {
			st, err = redis.New(ctx, redis.Options{URL: fmt.Sprintf("redis://127.0.0.1:%d", rport), OpTimeout: 30 * time.Second, MaxBindings: -1})
			if err == nil {
				break
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("haproxy or redis did not start: %v %v", herr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	defer st.Close()

	fmt.Printf("filling %d table entries (set table) and %d Redis bindings...\n", n, n)
	if err := fillTable(rt, n); err != nil {
		return err
	}
	if err := fillRedis(ctx, st, n); err != nil {
		return err
	}
	cfg := &config.Config{TTL: config.Duration(30 * time.Minute), Backends: []config.Backend{{Name: "mqtt"}}}
	cfg.HAProxy.LocalSize = n
	c := agent.NewConnected(cfg, rt, st, slog.New(slog.NewTextHandler(io.Discard, nil)))
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	for i := range n {
		c.Remember("mqtt", []byte(id(i)), 0)
	}
	runtime.GC()
	runtime.ReadMemStats(&m1)
	fmt.Printf("agent memory for the id map: %.0f bytes per connected client\n", float64(m1.HeapAlloc-m0.HeapAlloc)/float64(n))

	// The dump alone.
	t0, c0 := time.Now(), cpu()
	keys := 0
	if err := rt.ConnectedKeys(ctx, "mqtt", 512, func(k []tablekey.Key) error { keys += len(k); return nil }); err != nil {
		return err
	}
	fmt.Printf("show table (%d keys): %v wall, %v agent CPU\n", keys, time.Since(t0).Round(time.Millisecond), (cpu() - c0).Round(time.Millisecond))

	rdb := st.Client()
	mem0 := infoField(ctx, rdb, "memory", "used_memory")
	for round := 1; round <= 2; round++ {
		calls0, rcpu0 := evalshaCalls(ctx, rdb), redisCPU(ctx, rdb)
		t0, c0 = time.Now(), cpu()
		touched, unknown := c.Refresh(ctx, "mqtt")
		wall, acpu := time.Since(t0), cpu()-c0
		calls := evalshaCalls(ctx, rdb) - calls0
		fmt.Printf("refresh %d: %d touched, %d unknown; %v wall, agent CPU %v, %d EVALSHA (%.0f ops/s during the cycle), Redis CPU %.2fs\n",
			round, touched, unknown, wall.Round(time.Millisecond), acpu.Round(time.Millisecond), calls, float64(calls)/wall.Seconds(), redisCPU(ctx, rdb)-rcpu0)
	}
	mem1 := infoField(ctx, rdb, "memory", "used_memory")
	// A restarted agent: no id remembered, every key found by walking.
	fresh := agent.NewConnected(cfg, rt, st, slog.New(slog.NewTextHandler(io.Discard, nil)))
	t0, c0 = time.Now(), cpu()
	touched, unknown := fresh.Refresh(ctx, "mqtt")
	fmt.Printf("after a restart (ids resolved by walking the store): %d touched, %d unknown; %v wall, agent CPU %v\n",
		touched, unknown, time.Since(t0).Round(time.Millisecond), (cpu() - c0).Round(time.Millisecond))
	fmt.Printf("Redis memory: %.1f bytes per binding more with the connected mark\n", (mem1-mem0)/float64(n))
	fmt.Printf("at ttl 30m the period is %v: %.0f Redis ops/s sustained\n", agent.ConnectedEvery(30*time.Minute), float64(n)/agent.ConnectedEvery(30*time.Minute).Seconds())
	return nil
}

// fillTable sets conn_cur 1 for every client's key, 1000 commands a line.
func fillTable(rt *haproxy.RuntimeAPI, n int) error {
	var wg sync.WaitGroup
	errc := make(chan error, 4)
	per := (n + 3) / 4
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for from := w * per; from < min(n, (w+1)*per); from += 1000 {
				var b strings.Builder
				for i := from; i < min(from+1000, (w+1)*per, n); i++ {
					if b.Len() > 0 {
						b.WriteByte(';')
					}
					fmt.Fprintf(&b, "set table mqtt%s key %s data.conn_cur 1", haproxy.ConnectedSuffix, haproxy.TableKey([]byte(id(i))))
				}
				if _, err := rt.Command(context.Background(), b.String()); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	return <-errc
}

func fillRedis(ctx context.Context, st *redis.Store, n int) error {
	var wg sync.WaitGroup
	errc := make(chan error, 32)
	for w := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 32 {
				if _, err := st.GetOrClaim(ctx, "mqtt", id(i), "n"+strconv.Itoa(i%3+1), 30*time.Minute); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	return <-errc
}

func infoField(ctx context.Context, rdb goredis.UniversalClient, section, field string) float64 {
	out, _ := rdb.Info(ctx, section).Result()
	for _, l := range strings.Split(out, "\r\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

func redisCPU(ctx context.Context, rdb goredis.UniversalClient) float64 {
	return infoField(ctx, rdb, "cpu", "used_cpu_user") + infoField(ctx, rdb, "cpu", "used_cpu_sys")
}

func evalshaCalls(ctx context.Context, rdb goredis.UniversalClient) int64 {
	out, _ := rdb.Info(ctx, "commandstats").Result()
	for _, l := range strings.Split(out, "\r\n") {
		if v, ok := strings.CutPrefix(l, "cmdstat_evalsha:calls="); ok {
			n, _ := strconv.ParseInt(v[:strings.IndexByte(v, ',')], 10, 64)
			return n
		}
	}
	return 0
}

var _ store.Toucher = (*redis.Store)(nil)
