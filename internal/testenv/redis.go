package testenv

import (
	"bufio"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Redis is a private redis-server for one test, on a free loopback port.
//
// It runs with an append-only file (appendfsync everysec) in its own
// directory, so Kill then StartAgain brings the data back: Redis writes each
// command to the AOF before it replies, and the written file survives the
// process (fsync only matters if the machine dies). No RDB snapshots.
type Redis struct {
	Addr string // 127.0.0.1:port
	URL  string // redis://127.0.0.1:port/0
	Dir  string // working directory holding the AOF
	Proc *Process

	bin   string
	port  int
	extra []string
}

// StartRedis starts redis-server and waits until it answers PING. It skips
// the test when redis-server is missing (see RequireBinary). The server
// stops when the test ends.
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	return StartRedisArgs(t)
}

// StartRedisArgs is StartRedis with extra redis-server arguments (for
// example "--maxmemory", "2mb", "--maxmemory-policy", "noeviction").
func StartRedisArgs(t testing.TB, extra ...string) *Redis {
	t.Helper()
	r := &Redis{
		bin:   RequireBinary(t, "redis-server"),
		Dir:   t.TempDir(),
		extra: extra,
	}
	StartOnFreePorts(t, 1, func(ports []int) *Process {
		r.port = ports[0]
		r.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port))
		r.URL = "redis://" + r.Addr + "/0"
		r.Proc = Start(t, r.bin, r.args(), r.Dir)
		return r.Proc
	}, func(*Process) error { return r.ping() })
	return r
}

func (r *Redis) args() []string {
	return append([]string{
		"--port", strconv.Itoa(r.port),
		"--bind", "127.0.0.1",
		"--dir", r.Dir,
		"--save", "",
		"--appendonly", "yes",
		"--appendfsync", "everysec",
		"--daemonize", "no",
		"--logfile", "",
	}, r.extra...)
}

// start runs redis-server again on its port (StartAgain).
func (r *Redis) start(t testing.TB) {
	t.Helper()
	r.Proc = Start(t, r.bin, r.args(), r.Dir)
	Eventually(t, 10*time.Second, func() error {
		if err := r.Proc.Alive(); err != nil {
			t.Fatalf("redis-server: %v", err) // e.g. lost the port race; no point waiting
		}
		return r.ping()
	})
}

// ping sends an inline PING and expects +PONG (a loading server answers
// -LOADING and is not ready yet).
func (r *Redis) ping() error {
	c, err := net.DialTimeout("tcp", r.Addr, 200*time.Millisecond)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(500 * time.Millisecond))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(line) != "+PONG" {
		return fmt.Errorf("PING answered %q", strings.TrimSpace(line))
	}
	return nil
}

// Kill ends redis-server at once (SIGKILL), as a crash would.
func (r *Redis) Kill() { r.Proc.Kill() }

// StartAgain runs a new redis-server on the same port and directory after
// Kill; it loads the AOF, so earlier writes are back.
func (r *Redis) StartAgain(t testing.TB) {
	t.Helper()
	if !r.Proc.Exited() {
		t.Fatalf("redis-server on %s is still running", r.Addr)
	}
	r.start(t)
}
