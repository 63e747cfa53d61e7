// Package logging builds mailworker's slog loggers: text on a terminal,
// JSON otherwise, at the configured level, plus a debug-level twin writing
// to the same output for servers with email_debug set.
package logging

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
)

// Options configure New. Zero values: info level, format chosen by whether
// Writer is a terminal.
type Options struct {
	Writer io.Writer // default os.Stderr
	Level  string    // debug | info | warn | error
	Format string    // text | json | "" (auto)
}

// Factory hands out loggers that share one output.
type Factory struct {
	w      io.Writer
	json   bool
	level  slog.Level
	base   *slog.Logger
	debugL *slog.Logger
}

// New returns a Factory, or an error naming a bad level or format.
func New(o Options) (*Factory, error) {
	if o.Writer == nil {
		o.Writer = os.Stderr
	}
	lvl, err := ParseLevel(o.Level)
	if err != nil {
		return nil, err
	}
	var asJSON bool
	switch strings.ToLower(o.Format) {
	case "":
		asJSON = !IsTerminal(o.Writer)
	case "json":
		asJSON = true
	case "text":
	default:
		return nil, fmt.Errorf("log format %q: want text or json", o.Format)
	}
	f := &Factory{w: o.Writer, json: asJSON, level: lvl}
	f.base = slog.New(f.handler(lvl))
	f.debugL = slog.New(f.handler(slog.LevelDebug))
	return f, nil
}

func (f *Factory) handler(l slog.Level) slog.Handler {
	ho := &slog.HandlerOptions{Level: l}
	if f.json {
		return slog.NewJSONHandler(f.w, ho)
	}
	return slog.NewTextHandler(f.w, ho)
}

// Logger is the service logger at the configured level.
func (f *Factory) Logger() *slog.Logger { return f.base }

// Server returns the logger for one mail server: the service logger, or
// for email_debug servers one that also writes debug records (protocol
// transcript, per-message decisions) to the same output.
func (f *Factory) Server(name string, debug bool) *slog.Logger {
	l := f.base
	if debug && f.level > slog.LevelDebug {
		l = f.debugL
	}
	return l.With("server", name)
}

// ParseLevel parses a level name; "" is info.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "", "info":
		return slog.LevelInfo, nil
	case "debug":
		return slog.LevelDebug, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("log level %q: want debug, info, warn or error", s)
}

// IsTerminal reports whether w is a character device (a terminal).
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
