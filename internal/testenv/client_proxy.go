package testenv

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// ConnectBehindProxy is ConnectOnly from behind a load balancer that
// speaks the PROXY protocol: the connection to addr starts with a PROXY v2
// header claiming src -> dst, then a real MQTT client (paho, 3.1.1)
// connects over it and disconnects once accepted.
func ConnectBehindProxy(addr, clientID string, src, dst *net.TCPAddr) error {
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(clientID).
		SetAutoReconnect(false).SetConnectRetry(false).SetCleanSession(true).
		SetConnectTimeout(10 * time.Second).
		SetCustomOpenConnectionFn(func(*url.URL, mqtt.ClientOptions) (net.Conn, error) {
			c, err := net.DialTimeout("tcp", addr, 10*time.Second)
			if err != nil {
				return nil, err
			}
			if _, err := c.Write(ProxyV2Header(src, dst)); err != nil {
				c.Close()
				return nil, err
			}
			return c, nil
		})
	c := mqtt.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(15 * time.Second) {
		return errors.New("connect timed out")
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	c.Disconnect(0)
	return nil
}

// FreeAddr6 is FreeAddr on the IPv6 loopback: "[::1]:port".
func FreeAddr6(t testing.TB) string {
	t.Helper()
	return freeAddr(t, "[::1]:0")
}
