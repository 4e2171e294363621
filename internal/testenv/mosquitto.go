package testenv

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// NodeTopic is the retained topic on which each test broker names itself,
// so a client can tell which node it reached.
const NodeTopic = "stickyd/node"

// Broker is a mosquitto process.
type Broker struct {
	Name string
	Addr string
	Proc *Process
	dir  string
	host string // listener address: 127.0.0.1, or ::1 (StartMosquittoOn)
	port int
	// logPath is this run's log file; earlier runs' files stay beside it.
	logPath string
}

// StartMosquitto runs a mosquitto broker on a free loopback port that
// answers NodeTopic with its name (a retained message).
func StartMosquitto(t testing.TB, name string) *Broker {
	t.Helper()
	return StartMosquittoOn(t, name, "127.0.0.1")
}

// StartMosquittoOn is StartMosquitto listening on host (an IP literal:
// "::1" for IPv6 loopback).
func StartMosquittoOn(t testing.TB, name, host string) *Broker {
	t.Helper()
	RequireBinary(t, "mosquitto")
	b := &Broker{Name: name, dir: t.TempDir(), host: host}
	StartOnFreePorts(t, 1, func(ports []int) *Process {
		b.port = ports[0]
		b.Addr = net.JoinHostPort(host, strconv.Itoa(b.port))
		b.launch(t)
		return b.Proc
	}, func(*Process) error {
		c, err := net.DialTimeout("tcp", b.Addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
	b.announce(t)
	return b
}

// start runs the broker (again) on its port.
func (b *Broker) start(t testing.TB) {
	t.Helper()
	b.launch(t)
	WaitTCP(t, b.Addr, 10*time.Second)
	b.announce(t)
}

func (b *Broker) launch(t testing.TB) {
	t.Helper()
	conf := filepath.Join(b.dir, "mosquitto.conf")
	b.logPath = filepath.Join(b.dir, fmt.Sprintf("mosquitto-%d.log", time.Now().UnixNano()))
	body := fmt.Sprintf("listener %d %s\nallow_anonymous true\npersistence false\nlog_dest stdout\nlog_dest file %s\nlog_type notice\nlog_type error\nlog_type warning\nlog_timestamp false\nconnection_messages true\nmax_keepalive 65535\n", b.port, b.host, b.logPath)
	if os.Geteuid() == 0 {
		// As root, mosquitto drops to its own user, which cannot write
		// into the test's private temporary directory.
		body += "user root\n"
	}
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	b.Proc = Start(t, "mosquitto", []string{"-c", conf}, b.dir)
}

// announce publishes the broker's name, retained, on NodeTopic.
func (b *Broker) announce(t testing.TB) {
	t.Helper()
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + b.Addr).SetClientID("stickyd-test-announcer").SetAutoReconnect(false).SetConnectTimeout(5 * time.Second))
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("announce on %s: %v", b.Name, tok.Error())
	}
	if tok := c.Publish(NodeTopic, 1, true, b.Name); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("announce on %s: %v", b.Name, tok.Error())
	}
	c.Disconnect(100)
}

// Stop stops the broker.
func (b *Broker) Stop() { b.Proc.Stop() }

// Restart starts the broker again on the same port.
func (b *Broker) Restart(t testing.TB) {
	t.Helper()
	b.Proc.Stop()
	b.start(t)
}

var connectedRE = regexp.MustCompile(`New client connected from \S+ as (\S+) \(`)

// Connections counts, per client id, the connections the broker logged
// since it was first started (the broker's own view of who reached it).
func (b *Broker) Connections() map[string]int {
	out := map[string]int{}
	files, _ := filepath.Glob(filepath.Join(b.dir, "mosquitto-*.log"))
	var all strings.Builder
	for _, f := range files {
		data, _ := os.ReadFile(f)
		all.Write(data)
	}
	for _, m := range connectedRE.FindAllStringSubmatch(all.String(), -1) {
		out[m[1]]++
	}
	return out
}
