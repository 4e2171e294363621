package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"
)

// HAProxy is a running haproxy.
type HAProxy struct {
	Proc *Process
	Cfg  string
}

// StartHAProxy runs `haproxy -db -f DIR/haproxy.cfg` in the foreground after
// checking the file with `haproxy -c`, and waits for waitAddr to accept.
func StartHAProxy(t testing.TB, cfgDir, waitAddr string) *HAProxy {
	t.Helper()
	bin := RequireBinary(t, "haproxy")
	cfg := filepath.Join(cfgDir, "haproxy.cfg")
	if out, err := exec.Command(bin, "-c", "-f", cfg).CombinedOutput(); err != nil {
		data, _ := os.ReadFile(cfg)
		t.Fatalf("haproxy -c: %v\n%s\n--- %s ---\n%s", err, out, cfg, data)
	}
	h := &HAProxy{Cfg: cfg, Proc: Start(t, bin, []string{"-db", "-f", cfg}, cfgDir)}
	WaitTCP(t, waitAddr, 10*time.Second)
	return h
}

// HAProxyRelease is the release of the haproxy on PATH as `haproxy -v`
// prints it ("2.6.12-1+deb12u4", "2.4.0-6cbbecf09"), for tests that must
// allow for a known upstream bug of one release.
func HAProxyRelease(t testing.TB) string {
	t.Helper()
	bin := RequireBinary(t, "haproxy")
	out, err := exec.Command(bin, "-v").Output()
	if err != nil {
		t.Fatalf("%s -v: %v", bin, err)
	}
	m := haproxyReleaseRE.FindSubmatch(out)
	if m == nil {
		t.Fatalf("%s -v printed no version: %q", bin, out)
	}
	return string(m[1])
}

var haproxyReleaseRE = regexp.MustCompile(`HA-?Proxy version (\S+)`)
