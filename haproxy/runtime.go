package haproxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// RuntimeAPI talks to HAProxy's Runtime API (the stats socket). stickyd
// reads `show servers state` from it because HAProxy's own drain is
// invisible to srv_is_up(): a drained server still reports up.
type RuntimeAPI struct {
	network, addr string
	timeout       time.Duration
}

// NewRuntimeAPI takes a stats socket as written in haproxy.cfg: a unix
// path, "unix@/path", or "ipv4@host:port" / "ipv6@[host]:port".
func NewRuntimeAPI(socket string, timeout time.Duration) (*RuntimeAPI, error) {
	r := &RuntimeAPI{timeout: timeout}
	switch {
	case strings.HasPrefix(socket, "ipv4@"), strings.HasPrefix(socket, "ipv6@"):
		r.network, r.addr = "tcp", socket[5:]
	case strings.HasPrefix(socket, "unix@"):
		r.network, r.addr = "unix", socket[5:]
	case strings.HasPrefix(socket, "/"):
		r.network, r.addr = "unix", socket
	default:
		return nil, fmt.Errorf("runtime API: %q: want a unix path, unix@path or ipv4@host:port", socket)
	}
	if r.timeout <= 0 {
		r.timeout = time.Second
	}
	return r, nil
}

// Command sends one command and returns HAProxy's whole answer.
func (r *RuntimeAPI) Command(ctx context.Context, cmd string) (string, error) {
	d := net.Dialer{Timeout: r.timeout}
	c, err := d.DialContext(ctx, r.network, r.addr)
	if err != nil {
		return "", fmt.Errorf("runtime API: %w", err)
	}
	defer c.Close()
	deadline := time.Now().Add(r.timeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	_ = c.SetDeadline(deadline)
	if _, err := io.WriteString(c, cmd+"\n"); err != nil {
		return "", fmt.Errorf("runtime API: %w", err)
	}
	out, err := io.ReadAll(c)
	if err != nil {
		return "", fmt.Errorf("runtime API: %w", err)
	}
	return string(out), nil
}

// ServerAdmin is a server's administrative state as HAProxy holds it.
type ServerAdmin struct {
	Drain bool // set server ... state drain (or inherited)
	Maint bool // maintenance, forced, inherited, or from DNS resolution
	Up    bool // operational state is running
}

// Admin state bits of `show servers state` (srv_admin_state).
const (
	admFMaint = 0x01
	admIMaint = 0x02
	admCMaint = 0x04
	admFDrain = 0x08
	admIDrain = 0x10
	admRMaint = 0x20
	admHMaint = 0x40

	admMaint = admFMaint | admIMaint | admCMaint | admRMaint | admHMaint
	admDrain = admFDrain | admIDrain
)

// ErrNoSuchBackend is returned when HAProxy does not know the backend.
var ErrNoSuchBackend = errors.New("no such backend")

// ServersState returns the admin state of every server of a backend.
func (r *RuntimeAPI) ServersState(ctx context.Context, backend string) (map[string]ServerAdmin, error) {
	out, err := r.Command(ctx, "show servers state "+backend)
	if err != nil {
		return nil, err
	}
	return parseServersState(out, backend)
}

// parseServersState reads format version 1 of `show servers state`.
func parseServersState(out, backend string) (map[string]ServerAdmin, error) {
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	if !sc.Scan() {
		return nil, errors.New("runtime API: empty answer to show servers state")
	}
	first := strings.TrimSpace(sc.Text())
	if first != "1" {
		if strings.Contains(first, "Can't find backend") {
			return nil, fmt.Errorf("runtime API: backend %q: %w", backend, ErrNoSuchBackend)
		}
		return nil, fmt.Errorf("runtime API: unexpected answer %q", first)
	}
	states := map[string]ServerAdmin{}
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 7 {
			return nil, fmt.Errorf("runtime API: short server state line %q", line)
		}
		if f[1] != backend {
			continue
		}
		op, err1 := strconv.Atoi(f[5])
		adm, err2 := strconv.Atoi(f[6])
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("runtime API: bad server state line %q", line)
		}
		states[f[3]] = ServerAdmin{Drain: adm&admDrain != 0, Maint: adm&admMaint != 0, Up: op == 2}
	}
	return states, sc.Err()
}

// Unavailable returns the servers of a backend that HAProxy holds in drain
// or maintenance: they must get no new clients (agent.HAProxyDrainSource).
func (r *RuntimeAPI) Drained(ctx context.Context, backend string) (map[string]bool, error) {
	states, err := r.ServersState(ctx, backend)
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for name, st := range states {
		if st.Drain || st.Maint {
			out[name] = true
		}
	}
	return out, nil
}
