package haproxy

import (
	"time"

	"github.com/stickyd/stickyd/config"
)

// MQTTCheckConnect is the CONNECT the MQTT health check sends, in hex:
// MQTT 3.1.1, clean session, keepalive 10 s and an empty client id, so the
// broker assigns one and no two checks (or HAProxy instances) take each
// other's session over.
const MQTTCheckConnect = "10" + "0c" + // CONNECT, remaining length 12
	"00044d515454" + // protocol name "MQTT"
	"04" + "02" + "000a" + // level 4 (3.1.1), clean session, keepalive 10
	"0000" // empty client identifier

// MQTTCheckConnack matches the start of any MQTT 3.1.1 CONNACK (packet type
// 2, remaining length 2), whatever its return code: a broker that refuses
// the check's anonymous CONNECT still speaks MQTT, and is alive.
const MQTTCheckConnack = "^2002"

// MQTTCheckDisconnect ends the check's session cleanly.
const MQTTCheckDisconnect = "e000"

// proxyKeywords are the server keywords of each backends[].proxy_protocol.
var proxyKeywords = map[string]string{
	config.ProxyV1:      "send-proxy",
	config.ProxyV2:      "send-proxy-v2",
	config.ProxyV2SSL:   "send-proxy-v2-ssl",
	config.ProxyV2SSLCN: "send-proxy-v2-ssl-cn",
}

// ProxyOpts are the PROXY protocol keywords of a server line; checked
// servers send the header with their health checks too, since a broker
// that requires it refuses a connection without one.
func (d backendData) ProxyOpts(checked bool) string {
	kw, ok := proxyKeywords[d.ProxyProtocol]
	if !ok {
		return ""
	}
	if checked {
		return " " + kw + " check-send-proxy"
	}
	return " " + kw
}

// MQTTCheckTimeout bounds the wait for the CONNACK: the check interval,
// but at least a second, so a short interval does not fail a busy broker.
func (d backendData) MQTTCheckTimeout() string {
	return ms(config.Duration(max(d.Cfg.HAProxy.CheckInterval.D(), time.Second)))
}

// MQTTCheck reports whether the backend's health check speaks MQTT.
func (d backendData) MQTTCheck() bool { return d.HealthCheck != config.HealthCheckTCP }

func (backendData) MQTTCheckConnect() string    { return MQTTCheckConnect }
func (backendData) MQTTCheckConnack() string    { return MQTTCheckConnack }
func (backendData) MQTTCheckDisconnect() string { return MQTTCheckDisconnect }

// BindOpts follow the plain listener's address.
func (d backendData) BindOpts() string {
	if d.Cfg.HAProxy.AcceptProxy {
		return " accept-proxy"
	}
	return ""
}

// TLSBindOpts follow the TLS listener's address: HAProxy terminates TLS,
// and with a CA requires a client certificate that chains to it.
func (d backendData) TLSBindOpts() string {
	t := d.Cfg.HAProxy.TLS
	s := " ssl crt " + t.Crt
	if t.CA != "" {
		s += " ca-file " + t.CA + " verify required"
	}
	return s + d.BindOpts()
}

// KeyVar names the session variable (sess.stickyd.<name>) that holds the
// backend's client key.
func (d backendData) KeyVar() string {
	switch d.Key {
	case config.KeyUsername:
		return "user"
	case config.KeyCertCN:
		return "cn"
	}
	return "cid"
}

// KeyCertCN reports whether clients are keyed by their certificate's CN.
func (d backendData) KeyCertCN() bool { return d.Key == config.KeyCertCN }
