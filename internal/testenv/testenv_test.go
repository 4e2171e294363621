package testenv

import (
	"errors"
	"net"
	"testing"
)

func TestStartOnFreePortsRetriesALostPort(t *testing.T) {
	attempts := 0
	p, ports := StartOnFreePorts(t, 2, func(ports []int) *Process {
		attempts++
		if attempts == 1 {
			// As redis-server and mosquitto say it when the port went.
			return Start(t, "sh", []string{"-c", "echo 'Could not create server TCP listening socket: bind: Address already in use'; exit 1"}, t.TempDir())
		}
		return Start(t, "sleep", []string{"30"}, t.TempDir())
	}, func(p *Process) error {
		if p.Name != "sleep" {
			return errors.New("not serving") // as a PING that fails until it exits
		}
		return nil
	})
	if attempts != 2 || len(ports) != 2 || p.Alive() != nil {
		t.Fatalf("attempts %d, ports %v, alive %v", attempts, ports, p.Alive())
	}
}

// FreeAddr never hands out a port twice in one test process, although the
// kernel may give a closed listener's port to the next :0 listener.
func TestFreeAddrDistinct(t *testing.T) {
	seen := map[string]bool{}
	for range 300 {
		a := FreeAddr(t)
		_, port, _ := net.SplitHostPort(a)
		if seen[port] {
			t.Fatalf("port %s handed out twice", port)
		}
		seen[port] = true
	}
}
