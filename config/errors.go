package config

import (
	"strconv"
	"strings"
)

// Error is one problem found in a configuration. It never contains the
// value of a secret.
type Error struct {
	// File is the configuration file; "" for a Config built in code.
	File string
	// Line is the 1-based line of the offending key (or of the nearest
	// enclosing key when the key is missing); 0 when unknown.
	Line int
	// Env is the environment variable the offending value came from
	// (see Load), or "".
	Env string
	// Key is the dotted path of the key. A server is named by its name when
	// it has one ("servers.support.fetch_interval"), else by its 0-based
	// position in the list ("servers[1].fetch_interval"). Empty for syntax
	// errors.
	Key string
	// Reason says what is wrong and, where it helps, what to write instead.
	Reason string
}

// Error formats e as "FILE:LINE: KEY: REASON"; parts that are unknown are
// left out, and a value from the environment reads "env NAME: KEY: REASON".
func (e *Error) Error() string {
	var b strings.Builder
	switch {
	case e.Env != "":
		b.WriteString("env " + e.Env + ": ")
	case e.File != "" && e.Line > 0:
		b.WriteString(e.File + ":" + strconv.Itoa(e.Line) + ": ")
	case e.File != "":
		b.WriteString(e.File + ": ")
	case e.Line > 0:
		b.WriteString("line " + strconv.Itoa(e.Line) + ": ")
	}
	if e.Key != "" {
		b.WriteString(e.Key + ": ")
	}
	b.WriteString(e.Reason)
	return b.String()
}

// Errors is every problem found in a configuration, in file order. Load and
// Validate return all of them at once, as an Errors, never an empty one.
// Use errors.As(err, &errs) to get at the items.
type Errors []*Error

// Error prints one problem per line.
func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap returns the items, so errors.As finds a single *Error too.
func (es Errors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}
