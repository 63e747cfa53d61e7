package config

import (
	"errors"
	"fmt"
	"net"
	"os"
	"reflect"
	"strings"

	"github.com/mailworker/mailworker/secret"
)

// ErrNoSecret is returned (wrapped) by Password, ClientSecret and Token when
// the configuration names no secret, or the variable or file it names is
// empty.
var ErrNoSecret = errors.New("no secret configured")

// Server returns the server called name.
func (c *Config) Server(name string) (*Server, bool) {
	for i := range c.Servers {
		if c.Servers[i].Name == name {
			return &c.Servers[i], true
		}
	}
	return nil, false
}

// Equal reports whether a and b are the same configuration, field by field
// (reflect.DeepEqual; a nil and an empty list differ). A reload restarts a
// server's job exactly when !Equal(old, new).
func Equal(a, b Server) bool { return reflect.DeepEqual(a, b) }

// MailboxID returns the mailbox identity used in events and event ids: the
// first of Addresses, else Mailbox (Graph), else Impersonate (EWS
// app-only, where Username is empty), else Username, lower-cased.
// (It cannot be called Mailbox: that is the Graph mailbox field.)
func (s *Server) MailboxID() string {
	id := s.Username
	switch {
	case len(s.Addresses) > 0:
		id = s.Addresses[0]
	case s.Mailbox != "":
		id = s.Mailbox
	case s.Impersonate != "":
		id = s.Impersonate
	}
	return strings.ToLower(strings.TrimSpace(id))
}

// Endpoint returns where the server is reached, for display: host:port,
// the EWS URL, or graph:<mailbox>.
func (s *Server) Endpoint() string {
	switch s.Protocol {
	case ProtocolEWS:
		return s.EWSURL
	case ProtocolGraph:
		u := s.GraphURL
		if u == "" {
			u = "graph"
		}
		return u + ":" + s.Mailbox
	}
	return fmt.Sprintf("%s:%d", s.Host, s.Port)
}

// Password resolves auth.password_env or auth.password_file from the process
// environment; see PasswordFrom.
func (s *Server) Password() (secret.String, error) { return s.PasswordFrom(os.Getenv) }

// PasswordFrom resolves the server's password: the variable named by
// auth.password_env (looked up with getenv), or the content of
// auth.password_file without its trailing newline. Errors name the server
// and key, never the value.
func (s *Server) PasswordFrom(getenv func(string) string) (secret.String, error) {
	v, err := readSecret(getenv, s.Auth.PasswordEnv, s.Auth.PasswordFile, "password_env", "password_file")
	if err != nil {
		return secret.String{}, fmt.Errorf("config: server %s: auth.%w", s.Name, err)
	}
	return v, nil
}

// ClientSecret resolves client_secret_env or client_secret_file from the
// process environment; see ClientSecretFrom.
func (o *OAuth) ClientSecret() (secret.String, error) { return o.ClientSecretFrom(os.Getenv) }

// ClientSecretFrom resolves the OAuth client secret like PasswordFrom. A
// public client (neither key set) gets an error wrapping ErrNoSecret.
func (o *OAuth) ClientSecretFrom(getenv func(string) string) (secret.String, error) {
	v, err := readSecret(getenv, o.ClientSecretEnv, o.ClientSecretFile, "client_secret_env", "client_secret_file")
	if err != nil {
		return secret.String{}, fmt.Errorf("config: auth.oauth.%w", err)
	}
	return v, nil
}

// Token resolves admin.token_env or admin.token_file from the process
// environment; see TokenFrom.
func (a *Admin) Token() (secret.String, error) { return a.TokenFrom(os.Getenv) }

// TokenFrom resolves the admin bearer token like PasswordFrom. No token
// configured gives an error wrapping ErrNoSecret.
func (a *Admin) TokenFrom(getenv func(string) string) (secret.String, error) {
	v, err := readSecret(getenv, a.TokenEnv, a.TokenFile, "token_env", "token_file")
	if err != nil {
		return secret.String{}, fmt.Errorf("config: admin.%w", err)
	}
	return v, nil
}

// Problem reports why `mailworker run` cannot serve the admin listener as
// configured, or nil: the configured token cannot be read, or listen is not
// a loopback address and no token is configured (a loopback listener
// without one uses the token generated in data_dir). It is never a
// configuration error: run logs it and keeps fetching, check-config warns.
func (a *Admin) Problem(getenv func(string) string) error {
	if a.Listen == "" || a.Listen == "off" {
		return nil
	}
	if a.TokenEnv != "" || a.TokenFile != "" {
		_, err := a.TokenFrom(getenv)
		return err
	}
	host, _, err := net.SplitHostPort(a.Listen)
	if err != nil {
		return fmt.Errorf("config: admin.listen %q: %w", a.Listen, err)
	}
	if !isLoopback(host) {
		return fmt.Errorf("config: admin.listen %s is not a loopback address: set admin.token_env or admin.token_file so the listener requires a bearer token", a.Listen)
	}
	return nil
}

// readSecret returns the value of variable env, or of file. Errors start
// with the key name (callers prefix the path) and never contain the value.
func readSecret(getenv func(string) string, env, file, envKey, fileKey string) (secret.String, error) {
	switch {
	case env != "":
		v := getenv(env)
		if v == "" {
			return secret.String{}, fmt.Errorf("%s: environment variable %s is empty or unset: %w", envKey, env, ErrNoSecret)
		}
		return secret.New(v), nil
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			// The os error names the file, not its content.
			return secret.String{}, fmt.Errorf("%s: %w", fileKey, err)
		}
		v := strings.TrimRight(string(b), "\r\n")
		if v == "" {
			return secret.String{}, fmt.Errorf("%s: file %s is empty: %w", fileKey, file, ErrNoSecret)
		}
		return secret.New(v), nil
	}
	return secret.String{}, fmt.Errorf("%s: neither %s nor %s is set: %w", envKey, envKey, fileKey, ErrNoSecret)
}
