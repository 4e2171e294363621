package testenv

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// RedisCluster is a private three-master Redis Cluster (no replicas) for
// one test, on free loopback ports. It keeps no data on disk.
type RedisCluster struct {
	// URL is "redis-cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3".
	URL   string
	Addrs []string   // the masters, in start order
	Nodes []*Process // Nodes[i] listens on Addrs[i]
}

// StartRedisCluster starts three redis-server processes in cluster mode,
// joins them with `redis-cli --cluster create` (each master gets a third of
// the slots) and waits until every node reports cluster_state:ok. It skips
// the test when redis-server or redis-cli is missing (see RequireBinary).
// The servers stop when the test ends.
func StartRedisCluster(t testing.TB) *RedisCluster {
	t.Helper()
	bin := RequireBinary(t, "redis-server")
	cli := RequireBinary(t, "redis-cli")
	c := &RedisCluster{}
	for range 3 {
		dir := t.TempDir()
		var addr string
		p, _ := StartOnFreePorts(t, 2, func(ports []int) *Process {
			addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
			return Start(t, bin, []string{
				"--port", strconv.Itoa(ports[0]),
				"--bind", "127.0.0.1",
				"--dir", dir,
				"--cluster-enabled", "yes",
				"--cluster-config-file", filepath.Join(dir, "nodes.conf"),
				"--cluster-node-timeout", "2000",
				// The bus port defaults to port+10000, which may not exist (or
				// be taken) for an ephemeral port: take a free one too.
				"--cluster-port", strconv.Itoa(ports[1]),
				"--appendonly", "no",
				"--save", "",
				"--daemonize", "no",
				"--logfile", "",
			}, dir)
		}, func(*Process) error { return redisPing(addr) })
		c.Addrs = append(c.Addrs, addr)
		c.Nodes = append(c.Nodes, p)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	args := append([]string{"--cluster", "create"}, c.Addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	for _, addr := range c.Addrs {
		Eventually(t, 30*time.Second, func() error {
			info, err := RedisDo(addr, "CLUSTER", "INFO")
			if err != nil {
				return err
			}
			if s, _ := info.(string); !strings.Contains(s, "cluster_state:ok") {
				return fmt.Errorf("%s: cluster not ok yet:\n%s", addr, s)
			}
			return nil
		})
	}
	c.URL = "redis-cluster://" + strings.Join(c.Addrs, ",")
	return c
}

// redisPing checks that the server at addr answers PING.
func redisPing(addr string) error {
	v, err := RedisDo(addr, "PING")
	if err != nil {
		return err
	}
	if v != "PONG" {
		return fmt.Errorf("PING answered %v", v)
	}
	return nil
}

// RedisDo sends one command to the Redis server (or sentinel) at addr over
// a fresh connection and returns its reply: string for simple and bulk
// strings, int64, []any for arrays, nil for a nil reply. An error reply
// comes back as an error. It is for test set-up, not speed.
func RedisDo(addr string, args ...string) (any, error) {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := conn.Write([]byte(b.String())); err != nil {
		return nil, err
	}
	return readRESP(bufio.NewReader(conn))
}

func readRESP(r *bufio.Reader) (any, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return nil, errors.New("empty RESP line")
	}
	body := line[1:]
	switch line[0] {
	case '+':
		return body, nil
	case '-':
		return nil, errors.New(body)
	case ':':
		return strconv.ParseInt(body, 10, 64)
	case '$':
		n, err := strconv.Atoi(body)
		if err != nil || n < 0 {
			return nil, err
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, err
		}
		return string(buf[:n]), nil
	case '*':
		n, err := strconv.Atoi(body)
		if err != nil || n < 0 {
			return nil, err
		}
		out := make([]any, n)
		for i := range out {
			if out[i], err = readRESP(r); err != nil {
				return nil, err
			}
		}
		return out, nil
	default:
		return nil, fmt.Errorf("unexpected RESP line %q", line)
	}
}
