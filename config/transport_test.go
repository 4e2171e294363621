package config

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const transportBase = `
backends:
  - name: mqtt
    servers: [{name: n1, address: "[::1]:1883"}]
haproxy:
  bind: "[::1]:1883"
`

func TestTransportDefaults(t *testing.T) {
	cfg, err := Parse(strings.NewReader(transportBase+"  tls: {bind: \"[::1]:8883\", crt: /etc/stickyd/tls/server.pem}\n"), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	b := cfg.Backends[0]
	if b.TLSBind != "[::1]:8883" || b.HealthCheck != HealthCheckMQTT || b.ProxyProtocol != "" || cfg.HAProxy.AcceptProxy {
		t.Fatalf("defaults: %+v accept_proxy=%v", b, cfg.HAProxy.AcceptProxy)
	}
}

func TestTransportEnvOverrides(t *testing.T) {
	cfg, err := Parse(strings.NewReader(transportBase), envOf(map[string]string{
		"STICKYD_HAPROXY_TLS_BIND":     "127.0.0.1:8883",
		"STICKYD_HAPROXY_TLS_CRT":      "/run/tls/server.pem",
		"STICKYD_HAPROXY_TLS_CA":       "/run/tls/ca.pem",
		"STICKYD_HAPROXY_ACCEPT_PROXY": "true",
	}))
	if err != nil {
		t.Fatal(err)
	}
	tls := cfg.HAProxy.TLS
	if tls.Bind != "127.0.0.1:8883" || tls.Crt != "/run/tls/server.pem" || tls.CA != "/run/tls/ca.pem" || !cfg.HAProxy.AcceptProxy || cfg.Backends[0].TLSBind != "127.0.0.1:8883" {
		t.Fatalf("%+v", cfg.HAProxy)
	}
}

func TestTransportErrorsNameTheKey(t *testing.T) {
	const crt = "  tls: {bind: \"127.0.0.1:8883\", crt: /tls/s.pem}\n"
	const crtCA = "  tls: {bind: \"127.0.0.1:8883\", crt: /tls/s.pem, ca: /tls/ca.pem}\n"
	backend := func(extra string) string {
		return strings.Replace(transportBase, "  - name: mqtt\n", "  - name: mqtt\n"+extra, 1)
	}
	for _, tc := range []struct{ name, yaml, key, msg string }{
		{"TLS listener without crt", transportBase + "  tls: {bind: \"127.0.0.1:8883\"}\n", "haproxy.tls.crt", "required by the TLS listener 127.0.0.1:8883"},
		{"crt without a listener", transportBase + "  tls: {crt: /tls/s.pem}\n", "haproxy.tls.crt", "no TLS listener"},
		{"ca without crt", transportBase + "  tls: {ca: /tls/ca.pem}\n", "haproxy.tls.ca", "needs haproxy.tls.crt"},
		{"relative crt", transportBase + "  tls: {bind: \"127.0.0.1:8883\", crt: tls/s.pem}\n", "haproxy.tls.crt", "absolute path"},
		{"crt with a space", transportBase + "  tls: {bind: \"127.0.0.1:8883\", crt: \"/tls/my cert.pem\"}\n", "haproxy.tls.crt", "spaces"},
		{"bad TLS bind", transportBase + "  tls: {bind: \"::1:8883\", crt: /tls/s.pem}\n", "haproxy.tls.bind", "host:port"},
		{"TLS bind is the plain bind", transportBase + "  tls: {bind: \"[::1]:1883\", crt: /tls/s.pem}\n", "backends[0].tls_bind", "is also backends[0].bind"},
		{"bad proxy_protocol", backend("    proxy_protocol: v3\n"), "backends[0].proxy_protocol", `"v3"`},
		{"v2-ssl-cn without ca", backend("    proxy_protocol: v2-ssl-cn\n") + crt, "backends[0].proxy_protocol", "haproxy.tls.ca"},
		{"bad health_check", backend("    health_check: http\n"), "backends[0].health_check", `"http": want mqtt or tcp`},
		{"cert_cn without ca", backend("    key: cert_cn\n") + crt, "backends[0].key", "cert_cn needs haproxy.tls.ca"},
		{"cert_cn without TLS", backend("    key: cert_cn\n"), "backends[0].key", "cert_cn needs haproxy.tls.ca"},
		{"cert_cn on a backend without TLS listener", strings.Replace(transportBase, "haproxy:\n",
			"  - {name: dev, key: cert_cn, bind: \"127.0.0.1:2883\", servers: [{name: d1, address: \"127.0.0.1:1\"}]}\nhaproxy:\n", 1) + crtCA,
			"backends[1].key", "cert_cn needs a TLS listener"},
		{"TLS binds of two backends", strings.Replace(transportBase, "haproxy:\n",
			"  - {name: dev, bind: \"127.0.0.1:2883\", tls_bind: \"127.0.0.1:8883\", servers: [{name: d1, address: \"127.0.0.1:1\"}]}\nhaproxy:\n", 1) + crt,
			"backends[1].tls_bind", "is also backends[0].tls_bind"},
		{"bad key kind", backend("    key: ip\n"), "backends[0].key", "want client_id, username or cert_cn"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(strings.NewReader(tc.yaml), noEnv)
			var ce *Error
			if !errors.As(err, &ce) || ce.Key != tc.key || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v, want an error naming %s with %q", err, tc.key, tc.msg)
			}
		})
	}
}

// A complete TLS + client certificate + PROXY configuration is accepted.
func TestTransportValid(t *testing.T) {
	y := strings.Replace(transportBase, "  - name: mqtt\n", "  - name: mqtt\n    key: cert_cn\n    proxy_protocol: v2-ssl-cn\n    health_check: tcp\n", 1) +
		"  accept_proxy: true\n  tls: {bind: \"[::]:8883\", crt: /tls/s.pem, ca: /tls/ca.pem}\n"
	if _, err := Parse(strings.NewReader(y), noEnv); err != nil {
		t.Fatal(err)
	}
}

// pemFiles makes a self-signed certificate and its key, PEM encoded.
func pemFiles(t *testing.T, cn string) (cert, key []byte) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd})
}

func TestCheckTLSFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, parts ...[]byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, bytes.Join(parts, nil), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cert, key := pemFiles(t, "server")
	otherCert, otherKey := pemFiles(t, "other")
	good := write("good.pem", cert, key)
	split := write("split.pem", cert)
	write("split.pem.key", key)
	mismatch := write("mismatch.pem", cert, otherKey)
	keyOnly := write("key-only.pem", key)
	noKey := write("no-key.pem", otherCert)
	twoKeys := write("two-keys.pem", cert, key, otherKey)
	ca := write("ca.pem", otherCert)
	notCA := write("not-ca.pem", []byte("hello\n"))
	missing := filepath.Join(dir, "missing.pem")

	for _, tc := range []struct {
		name, crt, ca, key, msg string
	}{
		{"cert and key in one file", good, "", "", ""},
		{"key beside the cert", split, ca, "", ""},
		{"missing certificate", missing, "", "haproxy.tls.crt", "missing.pem: no such file or directory"},
		{"a directory", dir, "", "haproxy.tls.crt", "is a directory"},
		{"key of another certificate", mismatch, "", "haproxy.tls.crt", "private key does not match public key"},
		{"no certificate", keyOnly, "", "haproxy.tls.crt", "no PEM certificate"},
		{"no key anywhere", noKey, "", "haproxy.tls.crt", "no-key.pem.key cannot be read"},
		{"two keys", twoKeys, "", "haproxy.tls.crt", "2 private keys"},
		{"missing CA", good, missing, "haproxy.tls.ca", "missing.pem: no such file or directory"},
		{"CA file without a certificate", good, notCA, "haproxy.tls.ca", "no PEM certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Config{HAProxy: HAProxy{TLS: TLS{Crt: tc.crt, CA: tc.ca}}}
			err := c.CheckTLSFiles()
			if tc.key == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var ce *Error
			if !errors.As(err, &ce) || ce.Key != tc.key || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v, want an error naming %s with %q", err, tc.key, tc.msg)
			}
		})
	}
	if os.Geteuid() != 0 { // root reads any file
		unreadable := write("unreadable.pem", cert, key)
		if err := os.Chmod(unreadable, 0); err != nil {
			t.Fatal(err)
		}
		c := Config{HAProxy: HAProxy{TLS: TLS{Crt: unreadable}}}
		if err := c.CheckTLSFiles(); err == nil || !strings.Contains(err.Error(), "haproxy.tls.crt: open "+unreadable+": permission denied") {
			t.Fatalf("unreadable: %v", err)
		}
	}
}
