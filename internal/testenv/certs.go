package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// PKI is a throw-away certificate authority made with openssl under the
// test's temporary directory.
type PKI struct {
	Dir string
	// CA is the authority's certificate (PEM): the clients' --cafile and
	// HAProxy's ca-file.
	CA     string
	caKey  string
	serial int
}

// NewPKI makes a CA (EC P-256, valid two days).
func NewPKI(t testing.TB) *PKI {
	t.Helper()
	RequireBinary(t, "openssl")
	p := &PKI{Dir: t.TempDir()}
	p.CA, p.caKey = p.path("ca.pem"), p.path("ca.key")
	p.openssl(t, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
		"-keyout", p.caKey, "-out", p.CA, "-days", "2", "-subj", "/CN=stickyd test CA",
		"-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
	return p
}

// Server issues a server certificate for localhost, 127.0.0.1 and ::1 and
// returns one PEM file holding the certificate and its key, as HAProxy's
// crt wants it.
func (p *PKI) Server(t testing.TB) string {
	t.Helper()
	cert, key := p.issue(t, "server", "localhost",
		"subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\nextendedKeyUsage=serverAuth\n")
	both := p.path("server-crt-and-key.pem")
	var data []byte
	for _, f := range []string{cert, key} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		data = append(data, b...)
	}
	if err := os.WriteFile(both, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return both
}

// Client issues a client certificate with the given CN and returns the
// certificate and key files (mosquitto_pub --cert, --key).
func (p *PKI) Client(t testing.TB, cn string) (cert, key string) {
	t.Helper()
	return p.issue(t, "client", cn, "extendedKeyUsage=clientAuth\n")
}

// issue makes a key and a certificate signed by the CA with the extensions
// ext (an openssl extension file's lines).
func (p *PKI) issue(t testing.TB, kind, cn, ext string) (cert, key string) {
	t.Helper()
	p.serial++
	base := p.path(kind + "-" + strings.Map(func(r rune) rune {
		if r == '/' || r == ' ' {
			return '_'
		}
		return r
	}, cn))
	cert, key = base+".pem", base+".key"
	csr, extFile := base+".csr", base+".ext"
	if err := os.WriteFile(extFile, []byte(ext), 0o600); err != nil {
		t.Fatal(err)
	}
	p.openssl(t, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
		"-keyout", key, "-out", csr, "-subj", "/CN="+cn)
	p.openssl(t, "x509", "-req", "-in", csr, "-CA", p.CA, "-CAkey", p.caKey, "-set_serial", strconv.Itoa(p.serial+1000),
		"-days", "2", "-extfile", extFile, "-out", cert)
	return cert, key
}

func (p *PKI) path(name string) string { return filepath.Join(p.Dir, name) }

func (p *PKI) openssl(t testing.TB, args ...string) {
	t.Helper()
	cmd := exec.Command("openssl", args...)
	cmd.Dir = p.Dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}
