package e2e

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/stickyd/stickyd/internal/testenv"
)

// hold connects a real MQTT client through addr and keeps it connected
// until the returned function is called; it returns the node it reached.
func hold(t *testing.T, addr, id string) (node string, leave func()) {
	t.Helper()
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).
		SetAutoReconnect(false).SetConnectRetry(false).SetCleanSession(true).
		SetConnectTimeout(10 * time.Second).SetKeepAlive(2 * time.Second)
	got := make(chan string, 1)
	lost := make(chan error, 1)
	opts.SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) {
		select {
		case got <- string(m.Payload()):
		default:
		}
	})
	opts.SetConnectionLostHandler(func(_ mqtt.Client, err error) { lost <- err })
	c := mqtt.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
		t.Fatalf("%s: connect: %v", id, tok.Error())
	}
	if st := c.Subscribe(testenv.NodeTopic, 0, nil); !st.WaitTimeout(10*time.Second) || st.Error() != nil {
		t.Fatalf("%s: subscribe: %v", id, st.Error())
	}
	select {
	case node = <-got:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: no retained node name", id)
	}
	left := false
	leave = func() {
		if left {
			return
		}
		left = true
		select {
		case err := <-lost:
			t.Errorf("%s lost its connection while held: %v", id, err)
		default:
		}
		c.Disconnect(0)
	}
	t.Cleanup(leave)
	return node, leave
}

// binding returns a binding over the API, or the HTTP status when there
// is none.
func (c *apiClient) binding(id string) (int, map[string]any) {
	return c.do("GET", "/v1/backends/mqtt/bindings/"+url.PathEscape(id), nil)
}

// The scenario, on each store: ttl 3s, a client holds its
// connection for 8s while its node is drained. Its binding outlives the
// ttl (marked connected), its reconnect lands on the same draining node,
// and 5s after it leaves for good the binding is gone.
func TestConnectedBindingOutlivesTTL(t *testing.T) {
	for _, kind := range []string{"memory", "redis"} {
		t.Run(kind, func(t *testing.T) {
			var redisURL string
			if kind == "redis" {
				redisURL = testenv.StartRedis(t).URL
			}
			s := newStack(t, stackOpts{redisURL: redisURL, ttl: "3s"})
			c := s.api()
			start := time.Now()
			node, leave := hold(t, s.feAddr, "long-lived")
			if code, body := c.do("PUT", "/v1/backends/mqtt/servers/"+node+"/drain", nil); code != http.StatusOK {
				t.Fatalf("drain %s: %d %v", node, code, body)
			}
			time.Sleep(time.Until(start.Add(8 * time.Second)))
			code, b := c.binding("long-lived")
			if code != http.StatusOK || b["server"] != node || b["connected"] != true {
				t.Fatalf("after 8s connected with ttl 3s: %d %v; want bound to %s, connected", code, b, node)
			}
			_, be := c.do("GET", "/v1/backends/mqtt/servers/"+node, nil)
			if be["connected"] != float64(1) || be["bindings"] != float64(1) {
				t.Errorf("server %s: %v; want bindings 1, connected 1", node, be)
			}
			leave()
			if got, err := testenv.WhichNode(s.feAddr, "long-lived"); err != nil || got != node {
				t.Fatalf("reconnect reached %q (%v); want the draining %s", got, err, node)
			}
			time.Sleep(5 * time.Second)
			if code, b := c.binding("long-lived"); code != http.StatusNotFound {
				t.Fatalf("5s after leaving (ttl 3s): %d %v; want 404", code, b)
			}
		})
	}
}

// Two instances on Redis: a client held through A keeps its binding while
// B's agent refreshes only its own clients, and across a restart of A's
// agent (which resolves the connected keys by walking the store).
func TestConnectedAcrossInstances(t *testing.T) {
	r := testenv.StartRedis(t)
	a := newStack(t, stackOpts{redisURL: r.URL, ttl: "3s"})
	b := newStack(t, stackOpts{redisURL: r.URL, ttl: "3s", shared: a.brokers})
	nodeA, _ := hold(t, a.feAddr, "via-a")
	nodeB, _ := hold(t, b.feAddr, "via-b")
	check := func(when string) {
		t.Helper()
		for id, node := range map[string]string{"via-a": nodeA, "via-b": nodeB} {
			code, got := b.api().binding(id)
			if code != http.StatusOK || got["server"] != node || got["connected"] != true {
				t.Fatalf("%s: %s: %d %v; want bound to %s, connected", when, id, code, got, node)
			}
		}
	}
	time.Sleep(8 * time.Second)
	check("8s in, ttl 3s")
	a.stickyd.Kill()
	a.startStickyd()
	time.Sleep(8 * time.Second)
	check("8s after A's agent restarted")
}

// An operator evicts a connected client's binding: the refresh does not
// put it back, and the client is placed afresh at its next connect (here
// away from its old node, drained meanwhile).
func TestConnectedRefreshNeverRecreates(t *testing.T) {
	s := newStack(t, stackOpts{ttl: "3s"})
	c := s.api()
	node, leave := hold(t, s.feAddr, "evicted")
	time.Sleep(2 * time.Second) // a refresh or two while bound
	if code, _ := c.do("DELETE", "/v1/backends/mqtt/bindings/evicted", nil); code != http.StatusNoContent {
		t.Fatalf("evict: %d", code)
	}
	if code, _ := c.do("PUT", "/v1/backends/mqtt/servers/"+node+"/drain", nil); code != http.StatusOK {
		t.Fatalf("drain: %d", code)
	}
	// Several refresh periods (1s at ttl 3s) with the client connected.
	time.Sleep(4 * time.Second)
	if code, b := c.binding("evicted"); code != http.StatusNotFound {
		t.Fatalf("evicted binding of a connected client: %d %v; want 404 (not re-created)", code, b)
	}
	leave()
	got, err := testenv.WhichNode(s.feAddr, "evicted")
	if err != nil {
		t.Fatal(err)
	}
	if got == node {
		t.Fatalf("reconnect reached %s, drained after the eviction: want a fresh placement elsewhere", got)
	}
	testenv.Eventually(t, 5*time.Second, func() error {
		if code, b := c.binding("evicted"); code != http.StatusOK || b["server"] != got {
			return errors.New(fmt.Sprint("binding after reconnect: ", code, b))
		}
		return nil
	})
}
