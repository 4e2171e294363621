package testenv

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// SentinelMaster is the master name the sentinels of StartRedisSentinel
// monitor.
const SentinelMaster = "mymaster"

// RedisSentinel is a private Redis master, one replica and three sentinels
// (quorum 2) for one test, on free loopback ports. No data is kept on disk.
type RedisSentinel struct {
	// URL is "redis-sentinel://S1,S2,S3/0?master_name=mymaster".
	URL           string
	SentinelAddrs []string
	Sentinels     []*Process

	// Master and Replica are the processes started as such; after Failover
	// the roles are swapped in the cluster (Master is dead), not here.
	Master      *Process
	MasterAddr  string
	Replica     *Process
	ReplicaAddr string
}

// StartRedisSentinel starts the master, a replica of it and three sentinels
// (down-after 1 s, failover-timeout 5 s), and waits until the replica is in
// sync and every sentinel names the master, knows the replica and both
// other sentinels, so that a Failover can be agreed on. It skips the test
// when redis-server is missing. Everything stops when the test ends.
func StartRedisSentinel(t testing.TB) *RedisSentinel {
	t.Helper()
	bin := RequireBinary(t, "redis-server")
	rs := &RedisSentinel{}
	startData := func(extra ...string) (*Process, string) {
		dir := t.TempDir()
		var addr string
		p, _ := StartOnFreePorts(t, 1, func(ports []int) *Process {
			addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
			return Start(t, bin, append([]string{
				"--port", strconv.Itoa(ports[0]),
				"--bind", "127.0.0.1",
				"--dir", dir,
				"--appendonly", "no",
				"--save", "",
				"--daemonize", "no",
				"--logfile", "",
			}, extra...), dir)
		}, func(*Process) error { return redisPing(addr) })
		return p, addr
	}
	rs.Master, rs.MasterAddr = startData()
	masterPort := strings.TrimPrefix(rs.MasterAddr, "127.0.0.1:")
	rs.Replica, rs.ReplicaAddr = startData("--replicaof", "127.0.0.1", masterPort)
	Eventually(t, 20*time.Second, func() error {
		return infoHas(rs.ReplicaAddr, "replication", "master_link_status:up")
	})

	for range 3 {
		dir := t.TempDir()
		var addr string
		p, _ := StartOnFreePorts(t, 1, func(ports []int) *Process {
			addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
			// Sentinel rewrites its config file (known peers, epochs), so it
			// needs one of its own in a writable directory.
			conf := filepath.Join(dir, "sentinel.conf")
			body := fmt.Sprintf(`port %d
bind 127.0.0.1
dir %s
daemonize no
logfile ""
sentinel monitor %s 127.0.0.1 %s 2
sentinel down-after-milliseconds %s 1000
sentinel failover-timeout %s 5000
`, ports[0], dir, SentinelMaster, masterPort, SentinelMaster, SentinelMaster)
			if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
			return Start(t, bin, []string{conf, "--sentinel"}, dir)
		}, func(*Process) error { return redisPing(addr) })
		rs.Sentinels = append(rs.Sentinels, p)
		rs.SentinelAddrs = append(rs.SentinelAddrs, addr)
	}
	// Sentinels find the replica through the master's INFO and each other
	// through hello messages (every 2 s) on the master: wait for both, or a
	// failover could not reach its quorum.
	for i, addr := range rs.SentinelAddrs {
		Eventually(t, 30*time.Second, func() error {
			if err := rs.Sentinels[i].Alive(); err != nil {
				t.Fatalf("sentinel on %s: %v", addr, err)
			}
			if err := sentinelMasterIs(addr, rs.MasterAddr); err != nil {
				return err
			}
			if n, err := sentinelCount(addr, "REPLICAS"); err != nil || n != 1 {
				return fmt.Errorf("sentinel %s knows %d replicas (%v), want 1", addr, n, err)
			}
			if n, err := sentinelCount(addr, "SENTINELS"); err != nil || n != 2 {
				return fmt.Errorf("sentinel %s knows %d other sentinels (%v), want 2", addr, n, err)
			}
			return nil
		})
	}
	rs.URL = "redis-sentinel://" + strings.Join(rs.SentinelAddrs, ",") + "/0?master_name=" + SentinelMaster
	return rs
}

// Failover kills the master (SIGKILL) and waits until every sentinel names
// the replica as the new master and the replica has taken the role.
func (rs *RedisSentinel) Failover(t testing.TB) {
	t.Helper()
	rs.Master.Kill()
	for _, addr := range rs.SentinelAddrs {
		Eventually(t, 60*time.Second, func() error {
			return sentinelMasterIs(addr, rs.ReplicaAddr)
		})
	}
	Eventually(t, 30*time.Second, func() error {
		return infoHas(rs.ReplicaAddr, "replication", "role:master")
	})
}

// sentinelMasterIs checks that the sentinel at addr names want as master.
func sentinelMasterIs(addr, want string) error {
	v, err := RedisDo(addr, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SentinelMaster)
	if err != nil {
		return fmt.Errorf("sentinel %s: %w", addr, err)
	}
	hp, ok := v.([]any)
	if !ok || len(hp) != 2 {
		return fmt.Errorf("sentinel %s: master address %v", addr, v)
	}
	host, _ := hp[0].(string)
	port, _ := hp[1].(string)
	if got := net.JoinHostPort(host, port); got != want {
		return fmt.Errorf("sentinel %s names master %s, want %s", addr, got, want)
	}
	return nil
}

// sentinelCount returns how many entries SENTINEL <what> mymaster lists.
func sentinelCount(addr, what string) (int, error) {
	v, err := RedisDo(addr, "SENTINEL", what, SentinelMaster)
	if err != nil {
		return 0, err
	}
	l, ok := v.([]any)
	if !ok {
		return 0, fmt.Errorf("SENTINEL %s answered %v", what, v)
	}
	return len(l), nil
}

// infoHas checks that INFO <section> of the server at addr holds line.
func infoHas(addr, section, line string) error {
	v, err := RedisDo(addr, "INFO", section)
	if err != nil {
		return err
	}
	s, _ := v.(string)
	for _, l := range strings.Split(s, "\n") {
		if strings.TrimSpace(l) == line {
			return nil
		}
	}
	return fmt.Errorf("%s: INFO %s lacks %q", addr, section, line)
}
