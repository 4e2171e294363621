package ratelog

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestWarnHoldsBackAndCounts(t *testing.T) {
	var buf bytes.Buffer
	l := New(slog.New(slog.NewTextHandler(&buf, nil)), 10*time.Second)
	now := time.Unix(1000, 0)
	l.now = func() time.Time { return now }

	l.Warn("store failed", "op", "get")
	for range 5 {
		now = now.Add(time.Second)
		l.Warn("store failed", "op", "get")
	}
	now = now.Add(10 * time.Second)
	l.Warn("store failed", "op", "get")

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 lines, got %d:\n%s", len(lines), buf.String())
	}
	if strings.Contains(lines[0], "suppressed") {
		t.Errorf("first line counts nothing: %s", lines[0])
	}
	if !strings.Contains(lines[1], "suppressed=5") {
		t.Errorf("second line should say suppressed=5: %s", lines[1])
	}
}
