// Package e2e runs stickyd end to end against the real programs: Debian's
// haproxy, redis-server, mosquitto brokers and real MQTT clients (paho and
// mosquitto_sub). Each test starts its own stack on free loopback ports.
package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stickyd/stickyd/haproxy"
	"github.com/stickyd/stickyd/internal/testenv"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.CleanupBuild()
	os.Exit(code)
}

// stack is brokers + stickyd + haproxy, wired by a generated config.
type stack struct {
	t        *testing.T
	dir      string
	cfgPath  string
	brokers  []*testenv.Broker
	spoeAddr string
	apiAddr  string
	feAddr   string
	token    string
	redisURL string
	stickyd  *testenv.Process
	haproxy  *testenv.HAProxy
	// statsSocket is HAProxy's Runtime API socket ("" when not enabled).
	statsSocket string
}

type stackOpts struct {
	brokers  int
	redisURL string
	token    string
	extra    string // appended YAML
	// shared: brokers of another stack, so several HAProxy+stickyd
	// instances front the same nodes.
	shared []*testenv.Broker
	// statsSocket: give HAProxy a Runtime API socket (and the agent reads
	// drain state from it).
	statsSocket bool
}

func newStack(t *testing.T, o stackOpts) *stack {
	t.Helper()
	testenv.RequireBinary(t, "haproxy")
	if o.brokers == 0 {
		o.brokers = 2
	}
	s := &stack{t: t, dir: t.TempDir(), spoeAddr: testenv.FreeAddr(t), apiAddr: testenv.FreeAddr(t), feAddr: testenv.FreeAddr(t), redisURL: o.redisURL, token: o.token}
	s.brokers = o.shared
	for i := 0; len(o.shared) == 0 && i < o.brokers; i++ {
		s.brokers = append(s.brokers, testenv.StartMosquitto(t, fmt.Sprintf("n%d", i+1)))
	}
	if o.statsSocket {
		s.statsSocket = filepath.Join(s.dir, "admin.sock")
	}
	var servers strings.Builder
	for _, b := range s.brokers {
		fmt.Fprintf(&servers, "      - {name: %s, address: %q, weight: 1}\n", b.Name, b.Addr)
	}
	cfg := fmt.Sprintf(`spoe_listen: %q
api_listen: %q
api_token: %q
redis_url: %q
ttl: 30m
store_timeout: 200ms
log: {level: info}
backends:
  - name: mqtt
    key: client_id
    servers:
%shaproxy:
  bind: %q
  timeout_processing: 1s
  check_interval: 200ms
  stats_socket: %q
%s`, s.spoeAddr, s.apiAddr, o.token, o.redisURL, servers.String(), s.feAddr, s.statsSocket, o.extra)
	s.cfgPath = filepath.Join(s.dir, "stickyd.yaml")
	if err := os.WriteFile(s.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	bin := testenv.StickydBinary(t)
	if out, err := exec.Command(bin, "check-config", "--config", s.cfgPath).CombinedOutput(); err != nil {
		t.Fatalf("check-config: %v\n%s", err, out)
	}
	if out, err := exec.Command(bin, "haproxy-config", "--config", s.cfgPath, "--out", filepath.Join(s.dir, "haproxy"), "--log-connections").CombinedOutput(); err != nil {
		t.Fatalf("haproxy-config: %v\n%s", err, out)
	}
	// The agent starts first: with spop-check, HAProxy marks a missing
	// agent down and skips it until the check passes.
	s.startStickyd()
	s.haproxy = testenv.StartHAProxy(t, filepath.Join(s.dir, "haproxy"), s.feAddr)
	s.waitAgentUsed()
	return s
}

func (s *stack) startStickyd() {
	s.t.Helper()
	s.stickyd = testenv.StartStickyd(s.t, s.cfgPath, s.spoeAddr)
}

var warmups atomic.Int64

// waitAgentUsed waits until HAProxy's SPOE exchanges succeed, so tests do
// not race HAProxy's agent health check.
func (s *stack) waitAgentUsed() {
	s.t.Helper()
	id := fmt.Sprintf("warmup-%d", warmups.Add(1))
	testenv.Eventually(s.t, 20*time.Second, func() error {
		if _, err := testenv.WhichNode(s.feAddr, id); err != nil {
			return err
		}
		if !strings.Contains(s.haproxy.Proc.Output(), "key="+id+" agent=n") {
			return fmt.Errorf("agent not answering yet")
		}
		return nil
	})
}

func (s *stack) broker(name string) *testenv.Broker {
	for _, b := range s.brokers {
		if b.Name == name {
			return b
		}
	}
	s.t.Fatalf("no broker %q", name)
	return nil
}

// connectAll connects every id once through HAProxy, with a few workers,
// and returns the node each reached. Any failed connection fails the test.
func (s *stack) connectAll(ids []string) map[string]string {
	s.t.Helper()
	out := make(map[string]string, len(ids))
	var mu sync.Mutex
	var firstErr error
	work := make(chan string)
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range work {
				node, err := testenv.WhichNode(s.feAddr, id)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = fmt.Errorf("client %q: %w", id, err)
				}
				out[id] = node
				mu.Unlock()
			}
		}()
	}
	for _, id := range ids {
		work <- id
	}
	close(work)
	wg.Wait()
	if firstErr != nil {
		s.t.Fatal(firstErr)
	}
	return out
}

// waitServerState waits until HAProxy's health check sees the server in
// the wanted state: a connect of probe (no binding needed) is routed by
// the agent, and HAProxy reports the state in srv_is_up.
func (s *stack) waitDown(name string) {
	s.t.Helper()
	testenv.Eventually(s.t, 20*time.Second, func() error {
		out := s.haproxy.Proc.Output()
		if strings.Contains(out, "Server mqtt/"+name+" is DOWN") {
			return nil
		}
		return fmt.Errorf("HAProxy has not marked %s down yet", name)
	})
}

func (s *stack) waitUp(name string, after int) {
	s.t.Helper()
	testenv.Eventually(s.t, 20*time.Second, func() error {
		if strings.Count(s.haproxy.Proc.Output(), "Server mqtt/"+name+" is UP") > after {
			return nil
		}
		return fmt.Errorf("HAProxy has not marked %s up yet", name)
	})
}

// placeWhileDown connects ids while the named broker is stopped, so their
// bindings differ from what the hash picks once it is back (a restart or
// another instance that lost the map would send about half of them to
// it), then restarts the broker and waits for HAProxy to see it up.
func (s *stack) placeWhileDown(name string, clients []string) map[string]string {
	s.t.Helper()
	ups := strings.Count(s.haproxy.Proc.Output(), "Server mqtt/"+name+" is UP")
	s.broker(name).Stop()
	s.waitDown(name)
	placed := s.connectAll(clients)
	for _, id := range clients {
		if placed[id] == name {
			s.t.Fatalf("%s reached %s while it was down", id, name)
		}
	}
	s.broker(name).Restart(s.t)
	s.waitUp(name, ups)
	return placed
}

func ids(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%04d", prefix, i)
	}
	return out
}

// runtime sends one command to this stack's HAProxy Runtime API.
func (s *stack) runtime(cmd string) string {
	s.t.Helper()
	rt, err := haproxy.NewRuntimeAPI(s.statsSocket, 5*time.Second)
	if err != nil {
		s.t.Fatal(err)
	}
	out, err := rt.Command(context.Background(), cmd)
	if err != nil {
		s.t.Fatalf("runtime API %q: %v", cmd, err)
	}
	return out
}

// reload replaces HAProxy the way `haproxy -sf` reloads do: a new process
// takes the listening sockets over the stats socket (-x) and tells the old
// one to finish its connections and stop (-sf).
func (s *stack) reload() {
	s.t.Helper()
	old := s.haproxy
	cfg := filepath.Join(s.dir, "haproxy", "haproxy.cfg")
	bin := testenv.RequireBinary(s.t, "haproxy")
	p := testenv.Start(s.t, bin, []string{"-db", "-f", cfg, "-x", s.statsSocket, "-sf", fmt.Sprint(old.Proc.Cmd.Process.Pid)}, filepath.Dir(cfg))
	s.haproxy = &testenv.HAProxy{Proc: p, Cfg: cfg}
	select {
	case <-old.Proc.Done():
	case <-time.After(30 * time.Second):
		s.t.Fatal("old HAProxy did not stop after -sf")
	}
}

// storm connects ids through the stack's frontend(s) with workers until
// stop is closed; it reports every failure and each id's nodes.
type storm struct {
	mu       sync.Mutex
	nodes    map[string]map[string]int // id -> node -> connections
	failures []error
	total    int
	done     chan struct{}
}

func startStorm(t *testing.T, frontends []string, ids []string, workers int, stop <-chan struct{}) *storm {
	st := &storm{nodes: map[string]map[string]int{}, done: make(chan struct{})}
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; ; i += workers {
				select {
				case <-stop:
					return
				default:
				}
				id := ids[i%len(ids)]
				fe := frontends[i%len(frontends)]
				node, err := testenv.WhichNode(fe, id)
				st.mu.Lock()
				st.total++
				if err != nil {
					st.failures = append(st.failures, fmt.Errorf("%s via %s: %w", id, fe, err))
				} else {
					if st.nodes[id] == nil {
						st.nodes[id] = map[string]int{}
					}
					st.nodes[id][node]++
				}
				st.mu.Unlock()
			}
		}(w)
	}
	go func() { wg.Wait(); close(st.done) }()
	return st
}

// wait returns the storm's totals once every worker stopped.
func (st *storm) wait() (total int, failures []error, nodes map[string]map[string]int) {
	<-st.done
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.total, st.failures, st.nodes
}
