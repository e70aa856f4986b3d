package kv

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/redis/go-redis/v9"
)

// LogRedisTo sends go-redis's own log lines (failed dials, Sentinel
// naming a new master, dropped pub/sub messages), which otherwise go to
// stderr unformatted, to logger. go-redis has one logger per process, so
// main calls this once; the lines carry addresses, never credentials.
func LogRedisTo(logger *slog.Logger) {
	redis.SetLogger(redisLogger{logger})
}

type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	level := slog.LevelInfo
	if lower := strings.ToLower(msg); strings.Contains(lower, "fail") || strings.Contains(lower, "err") || strings.Contains(lower, "drop") {
		level = slog.LevelWarn
	}
	l.log.Log(ctx, level, msg, "component", "go-redis")
}
