package oauth

import (
	"errors"
	"fmt"
	"strings"
	"unicode"

	"golang.org/x/oauth2"
)

var (
	// ErrNeedsReauth means the server's grant is dead (revoked, expired,
	// consent withdrawn, client no longer authorized): an administrator must
	// run `mailworker oauth authorize` (or set-token) again. Calls fail fast
	// with it, without contacting the token endpoint, until then.
	ErrNeedsReauth = errors.New("oauth: needs re-authorization")

	// ErrNoToken means no token is stored for the server (never authorized,
	// revoked, or deleted because its settings changed). It wraps
	// ErrNeedsReauth, so callers that only branch on ErrNeedsReauth treat
	// both alike.
	ErrNoToken = fmt.Errorf("oauth: no token stored, authorize first: %w", ErrNeedsReauth)

	// ErrSettingsChanged means the stored token was granted for other
	// settings (client_id, scopes, username, ...). It wraps ErrNeedsReauth.
	ErrSettingsChanged = fmt.Errorf("oauth: settings changed since authorization, authorize again: %w", ErrNeedsReauth)

	// ErrTemporary means the token endpoint could not be reached or answered
	// with a server error; the caller should retry on its next run. Attempts
	// are spaced by a backoff, during which calls fail with it immediately.
	ErrTemporary = errors.New("oauth: temporary failure")

	// ErrNotOAuth means the server is not configured with auth method oauth2.
	ErrNotOAuth = errors.New("oauth: server does not use oauth2")

	// ErrState means an authorization response carried an unknown, used or
	// expired state, or one issued for another server.
	ErrState = errors.New("oauth: invalid or expired state")
)

// Token endpoint error codes (RFC 6749 section 5.2) that mean the grant or
// client is dead and retrying cannot help.
var deadGrantCodes = map[string]bool{
	"invalid_grant":       true,
	"unauthorized_client": true,
	"invalid_client":      true,
	"invalid_scope":       true,
}

// TokenError is a token endpoint failure with the response body stripped:
// oauth2.RetrieveError.Error() includes the raw body, which must never be
// logged. It keeps the HTTP status, the RFC 6749 error code and a sanitized
// description (Microsoft puts its AADSTS codes there).
type TokenError struct {
	Op          string // e.g. "refresh", "exchange code", "client credentials"
	Server      string // config name of the mail server
	Peer        string // token endpoint URL
	Status      int    // HTTP status, 0 when unknown
	Code        string // RFC 6749 error code, e.g. invalid_grant
	Description string // sanitized error_description
	kind        error  // ErrNeedsReauth, ErrTemporary or nil
}

func (e *TokenError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "oauth %s %s at %s: ", e.Op, e.Server, e.Peer)
	if e.Status != 0 {
		fmt.Fprintf(&b, "http %d", e.Status)
	}
	if e.Code != "" {
		fmt.Fprintf(&b, " %s", e.Code)
	}
	if e.Description != "" {
		fmt.Fprintf(&b, ": %s", e.Description)
	}
	if e.kind != nil {
		fmt.Fprintf(&b, " (%v)", e.kind)
	}
	return b.String()
}

// Unwrap returns ErrNeedsReauth or ErrTemporary as classified.
func (e *TokenError) Unwrap() error { return e.kind }

// maxDescription bounds the description kept from a token endpoint.
const maxDescription = 200

// sanitize keeps printable text only, removes every known secret, and
// truncates, so a provider's error_description can be logged.
func sanitize(s string, secrets ...string) string {
	for _, sec := range secrets {
		if len(sec) >= 4 {
			s = strings.ReplaceAll(s, sec, "[redacted]")
		}
	}
	s = strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return ' '
	}, s)
	if len(s) > maxDescription {
		s = s[:maxDescription] + "..."
	}
	return strings.TrimSpace(s)
}

// classify turns an error from x/oauth2 into a *TokenError (or a wrapped
// transport error) that carries no secrets. secrets are values sent in the
// request that a server might echo back.
func classify(op, server, peer string, err error, secrets ...string) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		te := &TokenError{Op: op, Server: server, Peer: peer, Code: sanitize(re.ErrorCode, secrets...),
			Description: sanitize(re.ErrorDescription, secrets...)}
		if re.Response != nil {
			te.Status = re.Response.StatusCode
		}
		// A dead grant needs a person. Anything else (5xx, 429, a 4xx
		// without an RFC 6749 body from a proxy, invalid_request) is
		// retried with backoff: it is not proof that the grant is dead.
		if deadGrantCodes[re.ErrorCode] {
			te.kind = ErrNeedsReauth
		} else {
			te.kind = ErrTemporary
		}
		return te
	}
	// Transport errors from net/http include the URL but never the body;
	// the form values are not part of url.Error.
	msg := sanitize(err.Error(), secrets...)
	return fmt.Errorf("oauth %s %s at %s: %s: %w", op, server, peer, msg, ErrTemporary)
}
