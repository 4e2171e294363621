package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

var (
	buildOnce sync.Once
	buildBin  string
	buildErr  error
)

// StickydBinary builds the stickyd command once per test process and
// returns its path. The binary lives in a temporary directory removed by
// CleanupBuild (call it from TestMain).
func StickydBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "stickyd-e2e-")
		if err != nil {
			buildErr = err
			return
		}
		buildBin = filepath.Join(dir, "stickyd")
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..")
		cmd := exec.Command("go", "build", "-o", buildBin, ".")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildBin
}

// CleanupBuild removes the binary StickydBinary built.
func CleanupBuild() {
	if buildBin != "" {
		_ = os.RemoveAll(filepath.Dir(buildBin))
	}
}

// StartStickyd runs `stickyd serve --config cfg` and waits for spoeAddr.
func StartStickyd(t testing.TB, cfg, spoeAddr string, env ...string) *Process {
	t.Helper()
	p := Start(t, StickydBinary(t), []string{"serve", "--config", cfg}, filepath.Dir(cfg), env...)
	WaitTCP(t, spoeAddr, 15e9)
	return p
}
