package replay

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/mailworker/mailworker/config"
	"github.com/mailworker/mailworker/secret"
)

// ToServerName is the config name given to the server built from a --to
// URL (it appears in logs and error messages only).
const ToServerName = "replay-to"

// ParseIMAPURL turns a --to destination into a server configuration:
//
//	imaps://user@host[:port][/Folder]   implicit TLS, port 993 by default
//	imap://user@host[:port][/Folder]    STARTTLS required, port 143 by default
//
// The user name and folder are percent-decoded (alice%40example.com,
// Support%2FNew or Support/New); the folder defaults to INBOX. A password
// in the URL is refused: it would end up in shell history and process
// lists; pass it through an environment variable instead.
func ParseIMAPURL(raw string) (config.Server, error) {
	u, err := url.Parse(raw)
	if err != nil {
		// url.Error quotes the URL, which holds no secret we accept anyway,
		// but keep the message short.
		return config.Server{}, fmt.Errorf("--to: not a URL: %w", errors.Unwrap(err))
	}
	srv := config.Server{Name: ToServerName, Auth: config.Auth{Method: config.AuthPassword}}
	switch strings.ToLower(u.Scheme) {
	case "imaps":
		srv.Protocol = config.ProtocolIMAPS
	case "imap":
		srv.Protocol = config.ProtocolIMAP
	default:
		return config.Server{}, fmt.Errorf("--to %s: scheme must be imaps:// or imap:// (STARTTLS)", redactURL(u))
	}
	if u.User == nil || u.User.Username() == "" {
		return config.Server{}, fmt.Errorf("--to %s: no user name (imaps://user@host/Folder)", redactURL(u))
	}
	if _, set := u.User.Password(); set {
		return config.Server{}, fmt.Errorf("--to %s: a password in the URL is not accepted; use --password-env", redactURL(u))
	}
	srv.Username = u.User.Username()
	srv.Host = u.Hostname()
	if srv.Host == "" {
		return config.Server{}, fmt.Errorf("--to %s: no host", redactURL(u))
	}
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n <= 0 || n > 65535 {
			return config.Server{}, fmt.Errorf("--to %s: bad port %q", redactURL(u), p)
		}
		srv.Port = n
	}
	srv.Folder = strings.TrimPrefix(u.Path, "/")
	if srv.Folder == "" {
		srv.Folder = "INBOX"
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return config.Server{}, fmt.Errorf("--to %s: unexpected query or fragment", redactURL(u))
	}
	return srv, nil
}

// redactURL prints u without any password.
func redactURL(u *url.URL) string { return u.Redacted() }

// PasswordCredentials are fetcher.Credentials holding one password (the
// --to URL form with --password-env). OAuth is not available this way.
type PasswordCredentials struct{ Secret secret.String }

// Password returns the password.
func (c PasswordCredentials) Password() (string, error) {
	if c.Secret.Empty() {
		return "", errors.New("no password (set --password-env to a variable holding it)")
	}
	return c.Secret.Reveal(), nil
}

// AccessToken always fails: a --to URL logs in with a password.
func (c PasswordCredentials) AccessToken(context.Context, bool) (string, error) {
	return "", errors.New("--to URLs log in with a password; use --to-server for OAuth servers")
}
