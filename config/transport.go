package config

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// TLS is the frontend's MQTT-over-TLS listener, terminated by HAProxy.
type TLS struct {
	// Bind is the first backend's TLS listener ("" = none); other backends
	// set tls_bind.
	Bind string `yaml:"bind"`
	// Crt is a PEM file with the certificate chain and its private key (or
	// the key in Crt+".key", which HAProxy also reads).
	Crt string `yaml:"crt"`
	// CA, when set, is a PEM bundle client certificates must chain to:
	// every TLS listener then requires one (verify required).
	CA string `yaml:"ca"`
}

// Health checks (backends[].health_check).
const (
	HealthCheckMQTT = "mqtt" // a CONNECT, answered by any CONNACK
	HealthCheckTCP  = "tcp"  // connect only
)

// PROXY protocol versions HAProxy can send brokers (backends[].proxy_protocol).
const (
	ProxyV1      = "v1"
	ProxyV2      = "v2"
	ProxyV2SSL   = "v2-ssl"    // v2 with the TLS information TLV
	ProxyV2SSLCN = "v2-ssl-cn" // v2-ssl plus the client certificate's CN
)

// finishTransport fills the transport defaults: MQTT health checks, and
// haproxy.tls.bind as the first backend's TLS listener.
func (c *Config) finishTransport() {
	for i := range c.Backends {
		b := &c.Backends[i]
		if b.HealthCheck == "" {
			b.HealthCheck = HealthCheckMQTT
		}
		if i == 0 && b.TLSBind == "" {
			b.TLSBind = c.HAProxy.TLS.Bind
		}
	}
}

// validateTransport checks TLS listeners, PROXY protocol and health checks,
// and the combinations that cannot work (cert_cn without client
// certificates). The files are read by CheckTLSFiles.
func (c *Config) validateTransport() error {
	t := c.HAProxy.TLS
	if t.Bind != "" {
		if err := checkHostPort(t.Bind); err != nil {
			return &Error{Key: "haproxy.tls.bind", Err: err}
		}
	}
	listeners := map[string]string{}
	for i, b := range c.Backends {
		if b.Bind != "" {
			listeners[b.Bind] = fmt.Sprintf("backends[%d].bind", i)
		}
	}
	tlsListener := ""
	for i, b := range c.Backends {
		key := fmt.Sprintf("backends[%d]", i)
		if b.TLSBind != "" {
			if err := checkHostPort(b.TLSBind); err != nil {
				return &Error{Key: key + ".tls_bind", Err: err}
			}
			if other, dup := listeners[b.TLSBind]; dup {
				return &Error{Key: key + ".tls_bind", Err: fmt.Errorf("%q is also %s", b.TLSBind, other)}
			}
			listeners[b.TLSBind] = key + ".tls_bind"
			tlsListener = b.TLSBind
		}
		if err := b.validateTransport(key, t); err != nil {
			return err
		}
	}
	switch {
	case tlsListener != "" && t.Crt == "":
		return &Error{Key: "haproxy.tls.crt", Err: fmt.Errorf("required by the TLS listener %s", tlsListener)}
	case tlsListener == "" && t.Crt != "":
		return &Error{Key: "haproxy.tls.crt", Err: errors.New("set, but there is no TLS listener (haproxy.tls.bind or a backend's tls_bind)")}
	case t.CA != "" && t.Crt == "":
		return &Error{Key: "haproxy.tls.ca", Err: errors.New("needs haproxy.tls.crt and a TLS listener")}
	}
	if err := checkPath(t.Crt); err != nil {
		return &Error{Key: "haproxy.tls.crt", Err: err}
	}
	if err := checkPath(t.CA); err != nil {
		return &Error{Key: "haproxy.tls.ca", Err: err}
	}
	return nil
}

func (b *Backend) validateTransport(key string, t TLS) error {
	switch b.ProxyProtocol {
	case "", ProxyV1, ProxyV2, ProxyV2SSL:
	case ProxyV2SSLCN:
		if t.CA == "" {
			return &Error{Key: key + ".proxy_protocol", Err: errors.New("v2-ssl-cn passes the client certificate's CN on: it needs haproxy.tls.ca (client certificates)")}
		}
	default:
		return &Error{Key: key + ".proxy_protocol", Err: fmt.Errorf("%q: want \"\", v1, v2, v2-ssl or v2-ssl-cn", b.ProxyProtocol)}
	}
	switch b.HealthCheck {
	case "", HealthCheckMQTT, HealthCheckTCP: // "": mqtt, when not loaded by Parse
	default:
		return &Error{Key: key + ".health_check", Err: fmt.Errorf("%q: want mqtt or tcp", b.HealthCheck)}
	}
	if b.Key == KeyCertCN {
		if t.CA == "" {
			return &Error{Key: key + ".key", Err: errors.New("cert_cn needs haproxy.tls.ca: without verified client certificates there is no CN to trust")}
		}
		if b.TLSBind == "" {
			return &Error{Key: key + ".key", Err: errors.New("cert_cn needs a TLS listener (tls_bind; haproxy.tls.bind for the first backend)")}
		}
	}
	return nil
}

// checkPath accepts what the generated configuration can name as is: an
// absolute path (HAProxy runs from any directory) without the characters
// HAProxy's parser gives a meaning to.
func checkPath(p string) error {
	if p == "" {
		return nil
	}
	if !filepath.IsAbs(p) {
		return fmt.Errorf("%q: want an absolute path (HAProxy reads it, from its own working directory)", p)
	}
	if strings.ContainsAny(p, " \t\r\n#\\'\"") {
		return fmt.Errorf("%q: spaces, quotes, # and \\ are not allowed in the path", p)
	}
	return nil
}

// CheckTLSFiles reads the files haproxy.tls names, so that a missing or
// unreadable certificate, a key that is not the certificate's, or a CA file
// without a certificate is reported by check-config and haproxy-config,
// naming the key, before HAProxy reads them. serve does not call it: the
// agent never opens these files, and need not have them.
func (c *Config) CheckTLSFiles() error {
	if p := c.HAProxy.TLS.Crt; p != "" {
		if err := checkKeyPair(p); err != nil {
			return &Error{Key: "haproxy.tls.crt", Err: err}
		}
	}
	if p := c.HAProxy.TLS.CA; p != "" {
		data, err := os.ReadFile(p)
		if err != nil {
			return &Error{Key: "haproxy.tls.ca", Err: err}
		}
		if !x509.NewCertPool().AppendCertsFromPEM(data) {
			return &Error{Key: "haproxy.tls.ca", Err: fmt.Errorf("%s: no PEM certificate in it", p)}
		}
	}
	return nil
}

// checkKeyPair loads a PEM certificate chain and its key the way HAProxy
// finds them: both in one file, or the key beside it in path+".key".
func checkKeyPair(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var certs, keys [][]byte
	for rest := data; ; {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			break
		}
		enc := pem.EncodeToMemory(blk)
		switch {
		case blk.Type == "CERTIFICATE":
			certs = append(certs, enc)
		case strings.HasSuffix(blk.Type, "PRIVATE KEY"):
			keys = append(keys, enc)
		}
	}
	if len(certs) == 0 {
		return fmt.Errorf("%s: no PEM certificate in it", path)
	}
	keyFile := path
	if len(keys) == 0 {
		keyFile = path + ".key"
		k, err := os.ReadFile(keyFile)
		if err != nil {
			return fmt.Errorf("%s has no private key, and %s cannot be read: %w", path, keyFile, err)
		}
		keys = [][]byte{k}
	}
	if len(keys) > 1 {
		return fmt.Errorf("%s: %d private keys, want one", path, len(keys))
	}
	if _, err := tls.X509KeyPair(bytes.Join(certs, nil), keys[0]); err != nil {
		return fmt.Errorf("%s with the key of %s: %w", path, keyFile, err)
	}
	return nil
}
