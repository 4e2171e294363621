// Package ratelog logs repeated failures without flooding the log: the
// first line at once, then at most one per period with the number of lines
// held back. An outage during a reconnect storm fails every connect; the
// log should say so once in a while, not thousands of times a second.
package ratelog

import (
	"log/slog"
	"sync"
	"time"
)

// DefaultEvery is the period used across stickyd.
const DefaultEvery = 10 * time.Second

// Logger rate-limits the warnings of one kind of failure. Use one per kind,
// so that one cannot hide another. Safe for concurrent use.
type Logger struct {
	log   *slog.Logger
	every time.Duration
	now   func() time.Time

	mu         sync.Mutex
	last       time.Time
	suppressed int
}

// New returns a Logger writing to log at most once per every.
func New(log *slog.Logger, every time.Duration) *Logger {
	return &Logger{log: log, every: every, now: time.Now}
}

// Warn logs msg now, or counts it when a line went out less than a period
// ago; the next line that goes out carries "suppressed", the count.
func (l *Logger) Warn(msg string, args ...any) {
	l.mu.Lock()
	now := l.now()
	if !l.last.IsZero() && now.Sub(l.last) < l.every {
		l.suppressed++
		l.mu.Unlock()
		return
	}
	n := l.suppressed
	l.suppressed, l.last = 0, now
	l.mu.Unlock()
	if n > 0 {
		args = append(args, "suppressed", n)
	}
	l.log.Warn(msg, args...)
}
