package fetcher

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"

	"github.com/mailworker/mailworker/config"
	"github.com/mailworker/mailworker/stallconn"
)

// ErrAuth is returned (wrapped) when the server rejected the credentials:
// a wrong password, or an OAuth token still refused after one refresh. The
// caller marks the server as needing attention; retrying soon will not help.
// A Credentials error (e.g. one wrapping oauth.ErrNeedsReauth) is returned
// wrapped as it is, not as ErrAuth.
var ErrAuth = errors.New("authentication failed")

// ErrTLSRequired is returned (wrapped) when a protocol "imap" server does not
// offer STARTTLS: mailworker never sends credentials in clear text.
var ErrTLSRequired = errors.New("server does not offer STARTTLS")

// DialIMAP connects to srv (imaps or imap with mandatory STARTTLS), verifies
// TLS and authenticates with the same mechanism choice, token refresh and
// retry rules as the fetcher. ctx bounds the dial and authentication only;
// afterwards the client is the caller's, who must Close it. The client is in
// the authenticated state, no mailbox selected. Stall detection
// (stall_timeout) covers the dial and login; afterwards it is off, since
// only the caller knows when it leaves the connection quiet, and go-imap's
// own timeouts apply.
func DialIMAP(ctx context.Context, srv config.Server, deps Deps) (*imapclient.Client, error) {
	f, err := NewIMAP(srv, deps)
	if err != nil {
		return nil, err
	}
	s, err := f.connect(ctx)
	if err != nil {
		return nil, err
	}
	s.wd.stop()
	s.wd.sc.Pause()
	return s.c, nil
}

// imapSession is one authenticated connection with its watchdog.
type imapSession struct {
	c    *imapclient.Client
	wd   *watchdog
	mech string // mechanism used to log in
}

func (s *imapSession) close() error {
	s.wd.stop()
	return s.c.Close()
}

// addr is host:port of the server.
func (f *IMAP) addr() string {
	port := f.srv.Port
	if port == 0 {
		port = 993
		if f.srv.Protocol == config.ProtocolIMAP {
			port = 143
		}
	}
	return net.JoinHostPort(f.srv.Host, strconv.Itoa(port))
}

// tlsConfig builds the client TLS configuration: verified against the
// system roots or srv.TLS.CAFile, server name from srv.TLS.ServerName or
// the host.
func imapTLSConfig(srv config.Server, override *tls.Config) (*tls.Config, error) {
	if override != nil {
		c := override.Clone()
		if c.ServerName == "" {
			c.ServerName = srv.Host
		}
		return c, nil
	}
	c := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         srv.TLS.ServerName,
		InsecureSkipVerify: srv.TLS.InsecureSkipVerify,
	}
	if c.ServerName == "" {
		c.ServerName = srv.Host
	}
	if srv.TLS.CAFile != "" {
		pem, err := os.ReadFile(srv.TLS.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls ca_file %s: no PEM certificate found", srv.TLS.CAFile)
		}
		c.RootCAs = pool
	}
	if srv.TLS.CertFile != "" || srv.TLS.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(srv.TLS.CertFile, srv.TLS.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls client certificate: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// connect dials, authenticates and returns a session whose watchdog follows
// ctx. Transient failures (network, timeouts) are retried with backoff; an
// authentication failure with OAuth is retried once with a refreshed token.
func (f *IMAP) connect(ctx context.Context) (*imapSession, error) {
	var lastErr error
	for attempt := 1; attempt <= f.deps.Backoff.Attempts; attempt++ {
		if attempt > 1 {
			f.log.WarnContext(ctx, "imap reconnect", "attempt", attempt, "err", lastErr)
			if err := f.deps.Backoff.wait(ctx, attempt-1); err != nil {
				return nil, fmt.Errorf("imap %s: connect: %w (after %w)", f.addr(), err, lastErr)
			}
		}
		s, err := f.connectOnce(ctx)
		if err == nil {
			return s, nil
		}
		if !imapRetryable(ctx, err) {
			return nil, err
		}
		lastErr = err
	}
	return nil, lastErr
}

// retryable reports whether a failed connection attempt may be retried.
func imapRetryable(ctx context.Context, err error) bool {
	// A stall ends the run: the next scheduled run starts on a fresh
	// connection (retrying now would likely stall again, for as long).
	if ctx.Err() != nil || errors.Is(err, ErrAuth) || errors.Is(err, ErrTLSRequired) || errors.Is(err, stallconn.ErrStalled) {
		return false
	}
	var certErr *tls.CertificateVerificationError
	if errors.As(err, &certErr) {
		return false
	}
	var credErr *credentialsError
	return !errors.As(err, &credErr)
}

// credentialsError marks a failure of Credentials (not of the server).
type credentialsError struct{ err error }

func (e *credentialsError) Error() string { return e.err.Error() }
func (e *credentialsError) Unwrap() error { return e.err }

func (f *IMAP) connectOnce(ctx context.Context) (*imapSession, error) {
	if f.srv.Auth.Method == config.AuthOAuth2 {
		tok, err := f.deps.Credentials.AccessToken(ctx, false)
		if err != nil {
			return nil, fmt.Errorf("imap %s: oauth token for %s: %w", f.addr(), f.srv.Username, &credentialsError{err})
		}
		s, err := f.dialAuth(ctx, tok)
		if err == nil || !isAuthFailure(err) {
			return s, err
		}
		f.log.InfoContext(ctx, "imap token rejected, refreshing", "err", err)
		tok, err = f.deps.Credentials.AccessToken(ctx, true)
		if err != nil {
			return nil, fmt.Errorf("imap %s: refresh oauth token for %s: %w", f.addr(), f.srv.Username, &credentialsError{err})
		}
		s, err = f.dialAuth(ctx, tok)
		if err != nil && isAuthFailure(err) {
			return nil, fmt.Errorf("%w: %w", ErrAuth, err)
		}
		return s, err
	}
	pw, err := f.deps.Credentials.Password()
	if err != nil {
		return nil, fmt.Errorf("imap %s: password for %s: %w", f.addr(), f.srv.Username, &credentialsError{err})
	}
	s, err := f.dialAuth(ctx, pw)
	if err != nil && isAuthFailure(err) {
		return nil, fmt.Errorf("%w: %w", ErrAuth, err)
	}
	return s, err
}

// dialAuth makes one connection and logs in with secret (password or
// token). On any failure the connection is closed: after a failed SASL
// exchange the connection state is unknown (see xoauth2Client).
func (f *IMAP) dialAuth(ctx context.Context, secret string) (*imapSession, error) {
	addr := f.addr()
	tcfg, err := imapTLSConfig(f.srv, f.deps.TLSConfig)
	if err != nil {
		return nil, fmt.Errorf("imap %s: %w", addr, err)
	}
	// Every read and write below, TLS included, has the stall timeout;
	// the watchdog names the step and bounds its total time.
	raw, wd, err := dialWatched(ctx, addr, f.deps.Timeouts)
	if err != nil {
		return nil, fmt.Errorf("imap %s: connect: %w", addr, err)
	}
	fail := func(op string, err error) (*imapSession, error) {
		err = wd.wrap(err)
		wd.stop()
		raw.Close()
		return nil, fmt.Errorf("imap %s: %s: %w", addr, op, err)
	}

	opts := &imapclient.Options{TLSConfig: tcfg}
	if f.srv.EmailDebug {
		opts.DebugWriter = newTraceWriter(ctx, f.log, secret)
	}
	var c *imapclient.Client
	if f.srv.Protocol == config.ProtocolIMAP {
		wd.arm("greeting and starttls", f.deps.Timeouts.Dial)
		c, err = f.startTLS(raw, opts)
		if err != nil {
			return fail("starttls", err)
		}
	} else {
		wd.arm("tls handshake", f.deps.Timeouts.Dial)
		tc := tls.Client(raw, tcfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			return fail("tls handshake", err)
		}
		wd.arm("greeting", f.deps.Timeouts.Dial)
		c = imapclient.New(tc, opts)
		if err := c.WaitGreeting(); err != nil {
			return fail("greeting", err)
		}
	}
	if c.State() != imap.ConnStateNotAuthenticated {
		c.Close()
		return fail("greeting", errors.New("server sent PREAUTH; refusing an unauthenticated imapSession"))
	}

	wd.arm("authenticate", f.deps.Timeouts.Command)
	caps := c.Caps()
	mech, err := f.login(c, caps, secret)
	if err != nil {
		c.Close()
		return fail("authenticate "+mech+" as "+f.srv.Username, err)
	}
	wd.arm("idle", f.deps.Timeouts.Command)
	return &imapSession{c: c, wd: wd, mech: mech}, nil
}

// startTLS reads the greeting of a plain connection, checks that STARTTLS
// is offered and upgrades.
func (f *IMAP) startTLS(raw net.Conn, opts *imapclient.Options) (*imapclient.Client, error) {
	// NewStartTLS sends STARTTLS straight away; a server without it answers
	// BAD/NO, which is reported as ErrTLSRequired.
	c, err := imapclient.NewStartTLS(raw, opts)
	if err != nil {
		var ie *imap.Error
		if errors.As(err, &ie) {
			return nil, fmt.Errorf("%w: %w", ErrTLSRequired, err)
		}
		return nil, err
	}
	return c, nil
}

// login authenticates with the configured method; it returns the mechanism
// name used (for logs and TestReport).
func (f *IMAP) login(c *imapclient.Client, caps imap.CapSet, secret string) (string, error) {
	user := f.srv.Username
	if f.srv.Auth.Method == config.AuthOAuth2 {
		mech := oauthMech(f.srv.Auth.OAuth.SASL, caps)
		var sc sasl.Client
		if mech == mechOAuthBearer {
			port, _ := strconv.Atoi(f.addr()[strings.LastIndexByte(f.addr(), ':')+1:])
			sc = sasl.NewOAuthBearerClient(&sasl.OAuthBearerOptions{Username: user, Token: secret, Host: f.srv.Host, Port: port})
		} else {
			sc = &xoauth2Client{user: user, token: secret}
		}
		return mech, c.Authenticate(sc)
	}
	if caps.Has(imap.Cap("AUTH=PLAIN")) {
		return mechPlain, c.Authenticate(sasl.NewPlainClient("", user, secret))
	}
	if caps.Has(imap.CapLoginDisabled) {
		return mechLogin, errors.New("server offers neither AUTH=PLAIN nor LOGIN")
	}
	return mechLogin, c.Login(user, secret).Wait()
}

// oauthMech picks the OAuth SASL mechanism: the configured one, else
// OAUTHBEARER (RFC 7628) when advertised, else XOAUTH2 (the only one
// Microsoft 365 offers).
func oauthMech(configured string, caps imap.CapSet) string {
	switch strings.ToLower(configured) {
	case "xoauth2":
		return mechXOAuth2
	case "oauthbearer":
		return mechOAuthBearer
	}
	if slices.ContainsFunc(caps.AuthMechanisms(), func(m string) bool { return strings.EqualFold(m, mechOAuthBearer) }) {
		return mechOAuthBearer
	}
	return mechXOAuth2
}

// logger returns deps.Logger with the server's attributes.
func serverLogger(l *slog.Logger, srv config.Server) *slog.Logger {
	folder := srv.Folder
	if folder == "" {
		folder = "INBOX"
	}
	return l.With("account", srv.Name, "mailbox", folder)
}
