package cmdutil

import (
	"fmt"
	"io"

	"github.com/go-logr/logr"
	"github.com/go-logr/zapr"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// NewLogger returns the logger for koncli's messages, writing to w. At
// verbosity 0 a message is printed as a plain line (its text, then its
// key-value pairs, if any): these are messages for people, such as "waiting
// for mutex ...". From -v 1 on each line starts with the time and the
// level, which matters when reading how decisions and requests interleave.
// logr's V(n) is zap level -n.
func NewLogger(w io.Writer, verbosity int) logr.Logger {
	enc := zapcore.EncoderConfig{
		MessageKey:       "msg",
		LineEnding:       zapcore.DefaultLineEnding,
		EncodeDuration:   zapcore.StringDurationEncoder,
		EncodeTime:       zapcore.TimeEncoderOfLayout("15:04:05.000"),
		EncodeLevel:      encodeLevel,
		ConsoleSeparator: " ",
	}
	if verbosity > 0 {
		enc.TimeKey = "time"
		enc.LevelKey = "level"
	}
	verbosity = max(0, min(verbosity, 127)) // zap levels are int8
	core := zapcore.NewCore(zapcore.NewConsoleEncoder(enc), zapcore.AddSync(w), zapcore.Level(-verbosity))
	return zapr.NewLogger(zap.New(core))
}

// encodeLevel prints logr's levels rather than zap's: V(1), V(2) for the
// debug levels.
func encodeLevel(l zapcore.Level, enc zapcore.PrimitiveArrayEncoder) {
	switch {
	case l < 0:
		enc.AppendString(fmt.Sprintf("V(%d)", -int(l)))
	case l == zapcore.InfoLevel:
		enc.AppendString("info")
	default:
		enc.AppendString(l.String())
	}
}

// LibraryLogger is the logger koncli gives package lock: log, with the
// library's level-0 messages (a hold lost, a retry begun) moved to V(1).
// koncli says those things itself, in its own words and once; with -v 1
// the library's own lines are shown too.
func LibraryLogger(log logr.Logger) logr.Logger {
	if log.GetSink() == nil {
		return log
	}
	return logr.New(demoted{log.GetSink()})
}

// demoted is a LogSink that logs every Info one level more verbose.
type demoted struct{ logr.LogSink }

func (d demoted) Enabled(level int) bool { return d.LogSink.Enabled(level + 1) }

func (d demoted) Info(level int, msg string, kv ...any) { d.LogSink.Info(level+1, msg, kv...) }

func (d demoted) WithValues(kv ...any) logr.LogSink { return demoted{d.LogSink.WithValues(kv...)} }

func (d demoted) WithName(name string) logr.LogSink { return demoted{d.LogSink.WithName(name)} }
