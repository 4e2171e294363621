package haproxy

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"testing"
	"time"
)

// Captured from HAProxy 2.6.12: n1 down, n2 in drain, n3 in maintenance.
const serversState = `1
# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port
3 mqtt 1 n1 127.0.0.1 0 0 1 1 2 8 2 0 6 0 0 0 - 39991 - 0 0 - - 0
3 mqtt 2 n2 127.0.0.1 2 8 1 1 0 1 0 2 0 0 0 0 - 39992 - 0 0 - - 0
3 mqtt 3 n3 127.0.0.1 0 1 1 1 0 1 0 0 0 0 0 0 - 39993 - 0 0 - - 0

`

func TestParseServersState(t *testing.T) {
	got, err := parseServersState(serversState, "mqtt")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]ServerAdmin{"n1": {}, "n2": {Drain: true, Up: true}, "n3": {Maint: true}}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: got %+v want %+v", k, got[k], v)
		}
	}
	if _, err := parseServersState("Can't find backend.\n", "x"); !errors.Is(err, ErrNoSuchBackend) {
		t.Fatalf("missing backend: %v", err)
	}
	for _, bad := range []string{"", "2\n", "1\n3 mqtt 1\n", "1\n3 mqtt 1 n1 a x y\n"} {
		if _, err := parseServersState(bad, "mqtt"); err == nil {
			t.Errorf("%q: want an error", bad)
		}
	}
}

func TestRuntimeAPIUnavailable(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "admin.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			buf := make([]byte, 256)
			n, _ := c.Read(buf)
			if string(buf[:n]) == "show servers state mqtt\n" {
				_, _ = c.Write([]byte(serversState))
			}
			c.Close()
		}
	}()
	for _, addr := range []string{sock, "unix@" + sock} {
		rt, err := NewRuntimeAPI(addr, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		got, err := rt.Drained(context.Background(), "mqtt")
		if err != nil || len(got) != 2 || !got["n2"] || !got["n3"] {
			t.Fatalf("%s: %v %v", addr, got, err)
		}
	}
	if _, err := NewRuntimeAPI("localhost:9999", time.Second); err == nil {
		t.Fatal("ambiguous address accepted")
	}
}
