package redis

import (
	"context"
	"fmt"
	"log/slog"

	goredis "github.com/redis/go-redis/v9"

	"github.com/stickyd/stickyd/internal/ratelog"
)

// SetLogger routes go-redis's own messages (failed dials, pool trouble)
// to l at warn level, rate-limited: while Redis is down the client would
// otherwise log every dial. go-redis keeps one logger per process, so main
// calls this once.
func SetLogger(l *slog.Logger) {
	goredis.SetLogger(clientLog{ratelog.New(l, ratelog.DefaultEvery)})
}

type clientLog struct{ log *ratelog.Logger }

func (c clientLog) Printf(_ context.Context, format string, v ...interface{}) {
	c.log.Warn("redis client: " + fmt.Sprintf(format, v...))
}
