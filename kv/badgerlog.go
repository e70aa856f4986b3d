package kv

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
)

// levelTrace is the slog level of Badger's debug output, one step below
// slog.LevelDebug (that is, -8).
const levelTrace = slog.LevelDebug - 4

// badgerLogger routes Badger's printf-style logging to slog.
type badgerLogger struct {
	l *slog.Logger
}

func (l badgerLogger) Errorf(format string, args ...any) {
	l.log(slog.LevelError, format, args)
}

func (l badgerLogger) Warningf(format string, args ...any) {
	l.log(slog.LevelWarn, format, args)
}

// Infof logs at debug level: Badger reports every flush, compaction and
// replay at info, which would drown the appliance's own info logs.
func (l badgerLogger) Infof(format string, args ...any) {
	l.log(slog.LevelDebug, format, args)
}

// Debugf logs below slog's debug level: Badger logs several debug lines for
// every single write, which would bury everything else at debug level. A
// handler with level -8 shows them.
func (l badgerLogger) Debugf(format string, args ...any) {
	l.log(levelTrace, format, args)
}

func (l badgerLogger) log(level slog.Level, format string, args []any) {
	ctx := context.Background()
	// Check first so that suppressed lines cost no formatting.
	if !l.l.Enabled(ctx, level) {
		return
	}
	msg := strings.TrimSpace(fmt.Sprintf(format, args...))
	l.l.Log(ctx, level, msg, "component", "badger")
}
