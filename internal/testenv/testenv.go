// Package testenv starts the real programs stickyd is tested against
// (redis-server, mosquitto, haproxy, stickyd itself) on free loopback ports,
// and stops each of them when the test that started it ends.
package testenv

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// RequireEnv, when set to 1, turns a missing binary into a test failure
// instead of a skip. `make test` sets it, so CI cannot pass by skipping.
const RequireEnv = "STICKYD_REQUIRE_BINARIES"

// RequireBinary returns the path of a program, skipping the test when it is
// missing (failing it when RequireEnv=1). Under -short every test that
// needs an external program is skipped: -short means unit tests only.
func RequireBinary(t testing.TB, name string) string {
	t.Helper()
	if testing.Short() {
		t.Skipf("-short: skipping a test that runs %s", name)
	}
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv(RequireEnv) == "1" {
			t.Fatalf("%s not found on PATH (run deploy/install-deps.sh, or: apt-get install -y haproxy redis-server redis-tools mosquitto mosquitto-clients chromium curl openssl)", name)
		}
		t.Skipf("%s not found on PATH; skipping (set %s=1 to fail instead)", name, RequireEnv)
	}
	return p
}

// FreeAddr returns a loopback "127.0.0.1:port" whose port came from a :0
// listener. The listener is closed before return, so a tiny race remains;
// callers that can take a listener directly should.
func FreeAddr(t testing.TB) string {
	t.Helper()
	return freeAddr(t, "127.0.0.1:0")
}

// handedOut holds the ports FreeAddr and FreeAddr6 returned in this test
// process: the kernel may give a closed listener's port to the next :0
// listener, so two calls in a row could return the same port (seen: a
// stack whose SPOE and API addresses were one port).
var handedOut = struct {
	sync.Mutex
	ports map[int]bool
}{ports: map[int]bool{}}

func freeAddr(t testing.TB, listen string) string {
	t.Helper()
	handedOut.Lock()
	defer handedOut.Unlock()
	for range 100 {
		l, err := net.Listen("tcp", listen)
		if err != nil {
			t.Fatalf("free port on %s: %v", listen, err)
		}
		addr := l.Addr().(*net.TCPAddr)
		l.Close()
		if !handedOut.ports[addr.Port] {
			handedOut.ports[addr.Port] = true
			return addr.String()
		}
	}
	t.Fatalf("no port on %s not handed out already", listen)
	return ""
}

// FreePort is FreeAddr's port number.
func FreePort(t testing.TB) int {
	t.Helper()
	_, p, _ := net.SplitHostPort(FreeAddr(t))
	n, _ := strconv.Atoi(p)
	return n
}

// Process is a program started for a test.
type Process struct {
	Name string
	Cmd  *exec.Cmd

	mu     sync.Mutex
	out    bytes.Buffer
	done   chan struct{}
	err    error
	stopMu sync.Mutex
}

type lockedWriter struct{ p *Process }

func (w lockedWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	return w.p.out.Write(b)
}

// Start runs a program in dir (t.TempDir() when empty) and stops it when the
// test ends. Its combined output is kept for Output and dumped on failure.
func Start(t testing.TB, name string, args []string, dir string, env ...string) *Process {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	// A process group, so Stop also reaches children (haproxy master/worker);
	// Pdeathsig, so nothing outlives a test binary that is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	p := &Process{Name: name, Cmd: cmd, done: make(chan struct{})}
	cmd.Stdout = lockedWriter{p}
	cmd.Stderr = lockedWriter{p}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("--- output of %s %v ---\n%s", name, args, p.Output())
		}
	})
	return p
}

// Output returns what the program has printed so far.
func (p *Process) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// Exited reports whether the program has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Done is closed when the program ends.
func (p *Process) Done() <-chan struct{} { return p.done }

// Signal sends sig to the program's process group.
func (p *Process) Signal(sig syscall.Signal) {
	if p.Cmd.Process != nil {
		_ = syscall.Kill(-p.Cmd.Process.Pid, sig)
	}
}

// Stop ends the program: SIGTERM, then SIGKILL after 5 s. Safe to call twice.
func (p *Process) Stop() {
	p.stopMu.Lock()
	defer p.stopMu.Unlock()
	if p.Exited() {
		return
	}
	p.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		p.Signal(syscall.SIGKILL)
		<-p.done
	}
}

// Kill ends the program at once with SIGKILL.
func (p *Process) Kill() {
	p.stopMu.Lock()
	defer p.stopMu.Unlock()
	if p.Exited() {
		return
	}
	p.Signal(syscall.SIGKILL)
	<-p.done
}

// WaitTCP waits until addr accepts connections, or fails the test.
func WaitTCP(t testing.TB, addr string, timeout time.Duration) {
	t.Helper()
	Eventually(t, timeout, func() error {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return err
		}
		return c.Close()
	})
}

// Eventually retries fn every 20 ms until it returns nil, or fails the test
// with fn's last error when timeout passes. It is a wait for a state, not a
// timing assertion: timeouts are generous.
func Eventually(t testing.TB, timeout time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for {
		if err = fn(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %v: %v", timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ErrExited is returned by waits on a program that has already ended.
var ErrExited = errors.New("process exited")

// Alive returns ErrExited (with the output) when the program has ended.
func (p *Process) Alive() error {
	if p.Exited() {
		return fmt.Errorf("%s: %w: %v\n%s", p.Name, ErrExited, p.err, p.Output())
	}
	return nil
}

// portAttempts bounds how often a server is started again on new ports.
const portAttempts = 5

// StartOnFreePorts starts a server on n ports taken from :0 listeners. Each
// listener is closed before the server binds its port, and in between the
// port may go to another process (an outgoing connection's source port,
// another test): the server then exits saying "Address already in use",
// and is started again on new ports. ready reports when it serves; the
// first error of a server that exited for another reason fails the test.
func StartOnFreePorts(t testing.TB, n int, start func(ports []int) *Process, ready func(p *Process) error) (*Process, []int) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		ports := make([]int, n)
		for i := range ports {
			ports[i] = FreePort(t)
		}
		p := start(ports)
		var exited error
		Eventually(t, 15*time.Second, func() error {
			if err := p.Alive(); err != nil {
				exited = err
				return nil
			}
			return ready(p)
		})
		if exited == nil {
			return p, ports
		}
		if !strings.Contains(p.Output(), "ddress already in use") || attempt == portAttempts {
			t.Fatalf("%s: %v", p.Name, exited)
		}
		t.Logf("%s lost a port to another process; starting it again on new ports", p.Name)
	}
}
