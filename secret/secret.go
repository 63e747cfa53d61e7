// Package secret keeps credentials out of logs, events and error messages,
// and encrypts them at rest.
//
// A String never prints its value: not through fmt, not through log/slog,
// not through encoding/json. Only Reveal returns it, at the point of use.
package secret

import "log/slog"

const redacted = "[redacted]"

// String holds a secret value (password, client secret, token).
type String struct{ v string }

// New wraps v.
func New(v string) String { return String{v: v} }

// Reveal returns the secret, for the one call that needs it.
func (s String) Reveal() string { return s.v }

// Empty reports whether no secret is set.
func (s String) Empty() bool { return s.v == "" }

// String implements fmt.Stringer without revealing the value.
func (s String) String() string { return redacted }

// GoString implements fmt.GoStringer for %#v.
func (s String) GoString() string { return redacted }

// LogValue implements slog.LogValuer.
func (s String) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalJSON never reveals the value.
func (s String) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// MarshalText never reveals the value.
func (s String) MarshalText() ([]byte, error) { return []byte(redacted), nil }
