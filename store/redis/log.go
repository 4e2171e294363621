package redis

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// SetLogger routes go-redis's own messages (failed dials, pool trouble)
// to l at warn level, at most one line per 10 s with a count of the lines
// held back: while Redis is down the client would otherwise log every dial.
// go-redis keeps one logger per process, so main calls this once.
func SetLogger(l *slog.Logger) {
	goredis.SetLogger(&clientLog{log: l, every: 10 * time.Second})
}

type clientLog struct {
	log        *slog.Logger
	every      time.Duration
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

func (c *clientLog) Printf(_ context.Context, format string, v ...interface{}) {
	c.mu.Lock()
	now := time.Now()
	if !c.last.IsZero() && now.Sub(c.last) < c.every {
		c.suppressed++
		c.mu.Unlock()
		return
	}
	n := c.suppressed
	c.suppressed, c.last = 0, now
	c.mu.Unlock()
	c.log.Warn("redis client: "+fmt.Sprintf(format, v...), "suppressed", n)
}
