package testenv

import (
	"errors"
	"fmt"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// WhichNode connects a real MQTT client (paho, MQTT 3.1.1) with clientID to
// addr, reads the retained NodeTopic and disconnects. It returns the name of
// the broker the client reached.
func WhichNode(addr, clientID string) (string, error) {
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(clientID).
		SetAutoReconnect(false).SetConnectRetry(false).SetCleanSession(true).
		SetConnectTimeout(10 * time.Second).SetKeepAlive(30 * time.Second)
	got := make(chan string, 1)
	opts.SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) {
		select {
		case got <- string(m.Payload()):
		default:
		}
	})
	c := mqtt.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(15 * time.Second) {
		return "", errors.New("connect timed out")
	}
	if err := tok.Error(); err != nil {
		return "", fmt.Errorf("connect: %w", err)
	}
	defer c.Disconnect(0)
	st := c.Subscribe(NodeTopic, 0, nil)
	if !st.WaitTimeout(10*time.Second) || st.Error() != nil {
		return "", fmt.Errorf("subscribe: %v", st.Error())
	}
	select {
	case n := <-got:
		return n, nil
	case <-time.After(10 * time.Second):
		return "", errors.New("no retained node name")
	}
}

// ConnectOnly connects a real MQTT client (paho, 3.1.1) with clientID to
// addr and disconnects once the broker accepted it. Unlike WhichNode it
// tolerates another connection with the same id taking the session over
// right after (which a broker does when the same id connects twice).
func ConnectOnly(addr, clientID string) error {
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(clientID).
		SetAutoReconnect(false).SetConnectRetry(false).SetCleanSession(true).
		SetConnectTimeout(10 * time.Second)
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
