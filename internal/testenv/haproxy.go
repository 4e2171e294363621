package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
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
