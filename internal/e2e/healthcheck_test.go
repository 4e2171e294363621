package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stickyd/stickyd/haproxy"
	"github.com/stickyd/stickyd/internal/testenv"
)

// A broker replaced by a socket that accepts TCP and never answers: the
// MQTT health check marks it down (a TCP check, on a second backend
// watching the same socket, keeps it up: that was the old behaviour), and
// then every client connects, on the other node, none sent to the socket.
func TestMQTTHealthCheckMarksSilentBrokerDown(t *testing.T) {
	n1, n2 := testenv.StartMosquitto(t, "n1"), testenv.StartMosquitto(t, "n2")
	spoe, api, fe, tcpFE := testenv.FreeAddr(t), testenv.FreeAddr(t), testenv.FreeAddr(t), testenv.FreeAddr(t)
	sock := filepath.Join(t.TempDir(), "admin.sock")
	s := startTStack(t, fmt.Sprintf(`spoe_listen: %q
api_listen: %q
store_timeout: 200ms
backends:
  - name: mqtt
    servers:
      - {name: n1, address: %q}
      - {name: n2, address: %q}
  - name: tcpchk
    bind: %q
    health_check: tcp
    servers:
      - {name: n2, address: %q}
haproxy:
  bind: %q
  stats_socket: %q
  timeout_processing: 1s
  check_interval: 200ms
`, spoe, api, n1.Addr, n2.Addr, tcpFE, n2.Addr, fe, sock), spoe, api, fe)
	s.waitAgent("warmup", func() error { _, err := testenv.WhichNode(fe, "warmup"); return err })
	rt, err := haproxy.NewRuntimeAPI(sock, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	clients := ids("silent", 60)
	var onN2 []string
	for id, node := range (&stack{t: t, feAddr: fe}).connectAll(clients) {
		if node == "n2" {
			onN2 = append(onN2, id)
		}
	}
	if len(onN2) == 0 {
		t.Fatal("no client on n2")
	}

	n2.Stop()
	silent := testenv.StartSilentBroker(t, n2.Addr)
	testenv.Eventually(t, 20*time.Second, func() error {
		if !strings.Contains(s.haproxy.Proc.Output(), "Server mqtt/n2 is DOWN, reason: Layer7 timeout") {
			return fmt.Errorf("mqtt/n2 not marked down by a timed-out MQTT check yet")
		}
		return nil
	})
	// The same socket passes a TCP check.
	testenv.Eventually(t, 20*time.Second, func() error {
		mq, mqc := checkState(t, rt, "mqtt", "n2")
		tc, tcc := checkState(t, rt, "tcpchk", "n2")
		if mq != "DOWN" || mqc != "L7TOUT" || tc != "UP" || tcc != "L4OK" {
			return fmt.Errorf("mqtt/n2 %s %s, tcpchk/n2 %s %s: want DOWN L7TOUT and UP L4OK", mq, mqc, tc, tcc)
		}
		return nil
	})

	for round := 0; round < 3; round++ {
		for id, node := range (&stack{t: t, feAddr: fe}).connectAll(clients) {
			if node != "n1" {
				t.Fatalf("round %d: %s reached %q with n2 silent", round, id, node)
			}
		}
	}
	accepted, got := silent.Stats()
	for _, id := range got {
		if id != "" {
			t.Fatalf("the silent socket received the CONNECT of client %q", id)
		}
	}
	if len(got) == 0 {
		t.Fatal("the silent socket received no MQTT health check")
	}
	t.Logf("silent n2: down by MQTT check (Layer7 timeout), up by TCP check; %d clients (%d were on n2) x 3 rounds, 0 failed, all on n1; "+
		"the socket accepted %d connections, %d MQTT check CONNECTs, 0 from clients", len(clients), len(onN2), accepted, len(got))
}

// checkState returns a server's status and check_status from HAProxy's
// `show stat`.
func checkState(t *testing.T, rt *haproxy.RuntimeAPI, backend, server string) (status, checkStatus string) {
	t.Helper()
	out, err := rt.Command(context.Background(), "show stat")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimPrefix(out, "# "), "\n")
	col := map[string]int{}
	for i, name := range strings.Split(lines[0], ",") {
		col[name] = i
	}
	for _, l := range lines[1:] {
		if f := strings.Split(l, ","); len(f) > col["check_status"] && f[0] == backend && f[1] == server {
			return f[col["status"]], f[col["check_status"]]
		}
	}
	t.Fatalf("no %s/%s in:\n%s", backend, server, out)
	return "", ""
}
