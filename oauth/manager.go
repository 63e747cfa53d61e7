package oauth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/mailworker/mailworker/config"
	"github.com/mailworker/mailworker/secret"
	"github.com/mailworker/mailworker/stallconn"
)

const (
	// RefreshSkew is how long before its expiry an access token is renewed,
	// so a token never expires in the middle of a fetch.
	RefreshSkew = time.Minute
	// StateTTL is how long an authorization (its state and PKCE verifier)
	// may take between start and callback.
	StateTTL = 10 * time.Minute
	// tokenTimeout bounds one token endpoint round trip plus storing the
	// result, when the caller's context has no deadline.
	tokenTimeout = 30 * time.Second
	// minBackoff and maxBackoff space retries after temporary failures.
	minBackoff = 5 * time.Second
	maxBackoff = 5 * time.Minute
)

// Manager obtains, stores and refreshes OAuth tokens for mail servers. It is
// safe for concurrent use; refreshes are serialised per server, so
// concurrent callers share one token endpoint request.
type Manager struct {
	db     *sqlx.DB
	box    *secret.Box
	log    *slog.Logger
	hc     *http.Client // the caller's client; nil = per stall timeout, see client
	getenv func(string) string
	now    func() time.Time

	minBackoff, maxBackoff time.Duration

	// deleteChanged: a token whose settings changed is deleted when used
	// (run), not only refused.
	deleteChanged bool

	mu      sync.Mutex
	servers map[string]config.Server
	states  map[string]*serverState
	clients map[time.Duration]*http.Client // by stall timeout, when hc is nil
}

// serverState is the in-memory state of one server's token.
type serverState struct {
	lock        chan struct{} // held while reading or refreshing: single flight
	fingerprint string
	tok         *oauth2.Token // last good token (access + refresh)
	unsaved     bool          // tok rotated but not yet stored
	dead        bool          // a dead grant was seen and logged
	failures    int           // consecutive temporary failures
	retryAt     time.Time     // no token request before this
	lastErr     error         // returned while waiting for retryAt
}

// New returns a Manager storing tokens in db (migrated, tables oauth_*),
// sealed with box. logger nil discards. httpClient is used for every token,
// revocation and authorization request; nil means clients of mailworker's
// own whose connections have TCP keepalive and the server's stall_timeout
// on every read and write (package stallconn).
func New(db *sqlx.DB, box *secret.Box, logger *slog.Logger, httpClient *http.Client) *Manager {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Manager{
		db: db, box: box, log: logger, hc: httpClient,
		getenv: os.Getenv, now: time.Now,
		minBackoff: minBackoff, maxBackoff: maxBackoff,
		servers: map[string]config.Server{},
		states:  map[string]*serverState{},
	}
}

// SetGetenv replaces os.Getenv for resolving client_secret_env and
// password_env (tests, and the CLI's environment).
func (m *Manager) SetGetenv(getenv func(string) string) {
	if getenv == nil {
		getenv = os.Getenv
	}
	m.getenv = getenv
}

// SetDeleteChangedTokens makes the Manager delete a stored token whose
// settings changed when a fetch asks for it (after logging the server and
// the names of the changed settings). Only `mailworker run` sets it; by
// default such a token is refused with ErrSettingsChanged and kept, so
// read-only commands never destroy it.
func (m *Manager) SetDeleteChangedTokens(on bool) { m.deleteChanged = on }

// SetServers tells the Manager the configured servers, so that Handler can
// start an authorization by server name. Servers passed to Resolve,
// Credentials, Status or StartAuthorization are remembered as well.
func (m *Manager) SetServers(srvs []config.Server) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.servers = make(map[string]config.Server, len(srvs))
	for _, s := range srvs {
		m.servers[s.Name] = s
	}
}

func (m *Manager) remember(srv config.Server) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.servers[srv.Name] = srv
}

func (m *Manager) server(name string) (config.Server, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.servers[name]
	return s, ok
}

func (m *Manager) state(name string) *serverState {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.states[name]
	if st == nil {
		st = &serverState{lock: make(chan struct{}, 1)}
		m.states[name] = st
	}
	return st
}

func (st *serverState) acquire(ctx context.Context) error {
	select {
	case st.lock <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (st *serverState) release() { <-st.lock }

// forget drops everything cached (new grant, revoked, settings changed).
func (st *serverState) forget() {
	st.tok, st.unsaved, st.dead = nil, false, false
	st.failures, st.retryAt, st.lastErr = 0, time.Time{}, nil
}

func (m *Manager) httpCtx(ctx context.Context, server string) context.Context {
	return context.WithValue(ctx, oauth2.HTTPClient, m.client(server))
}

// client returns the HTTP client for server's token endpoint requests:
// the one given to New, else one whose connections stall out after the
// server's stall_timeout.
func (m *Manager) client(server string) *http.Client {
	if m.hc != nil {
		return m.hc
	}
	d := stallconn.DefaultTimeout
	if s, ok := m.server(server); ok && s.StallTimeout > 0 {
		d = s.StallTimeout.D()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.clients[d]
	if c == nil {
		if m.clients == nil {
			m.clients = map[time.Duration]*http.Client{}
		}
		c = &http.Client{Transport: stallconn.Transport(nil, d)}
		m.clients[d] = c
	}
	return c
}

// fresh reports whether tok can be used without refreshing first.
func (m *Manager) fresh(tok *oauth2.Token) bool {
	if tok == nil || tok.AccessToken == "" {
		return false
	}
	return tok.Expiry.IsZero() || m.now().Add(RefreshSkew).Before(tok.Expiry)
}

// Credentials returns what a fetcher needs to log in to srv. The result
// satisfies fetcher.Credentials.
func (m *Manager) Credentials(srv config.Server) *Credentials {
	m.remember(srv)
	return &Credentials{m: m, srv: srv}
}

// Credentials are one server's credentials, backed by a Manager.
type Credentials struct {
	m   *Manager
	srv config.Server
}

// Password returns the server's password from password_env or
// password_file (password and ntlm methods).
func (c *Credentials) Password() (string, error) {
	p, err := c.srv.PasswordFrom(c.m.getenv)
	if err != nil {
		return "", err
	}
	return p.Reveal(), nil
}

// AccessToken returns a valid access token. It serves the cached token
// until RefreshSkew before its expiry, then refreshes (once for all
// concurrent callers) and stores a rotated refresh token before returning.
// refresh set discards the cached token first (the server rejected it).
//
// Errors wrap ErrNoToken (nothing stored), ErrNeedsReauth (the grant is
// dead; returned without contacting the provider until re-authorized) or
// ErrTemporary (retry later; calls during the backoff fail immediately).
func (c *Credentials) AccessToken(ctx context.Context, refresh bool) (string, error) {
	return c.m.accessToken(ctx, c.srv, refresh)
}

func (m *Manager) accessToken(ctx context.Context, srv config.Server, force bool) (string, error) {
	s, err := resolve(srv, m.getenv)
	if err != nil {
		return "", err
	}
	st := m.state(srv.Name)
	if err := st.acquire(ctx); err != nil {
		return "", fmt.Errorf("oauth token %s: %w", srv.Name, err)
	}
	defer st.release()

	if fp := s.Fingerprint(); st.fingerprint != fp {
		st.forget()
		st.fingerprint = fp
	}
	if !force && !st.unsaved && m.fresh(st.tok) {
		return st.tok.AccessToken, nil
	}
	if s.Flow == config.FlowClientCredentials {
		return m.appToken(ctx, s, st)
	}
	return m.userToken(ctx, s, st, force)
}

// retryWait returns the pending backoff error, if any.
func (m *Manager) retryWait(s Settings, st *serverState) error {
	if st.lastErr != nil && m.now().Before(st.retryAt) {
		return fmt.Errorf("oauth token %s: retrying after %s: %w", s.Server, st.retryAt.UTC().Format(time.RFC3339), st.lastErr)
	}
	return nil
}

func (m *Manager) backoff(st *serverState, err error) {
	st.failures++
	d := m.minBackoff << min(st.failures-1, 16)
	if d > m.maxBackoff || d <= 0 {
		d = m.maxBackoff
	}
	st.retryAt = m.now().Add(d)
	st.lastErr = err
}

// detach gives a token request its own deadline that outlives the caller:
// once a provider has rotated the refresh token, the new one must be stored
// even if the fetch that asked for it was cancelled, or the grant is lost.
func detach(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), tokenTimeout)
}

// userToken serves delegated flows from the stored token.
func (m *Manager) userToken(ctx context.Context, s Settings, st *serverState, force bool) (string, error) {
	row, err := m.loadRow(ctx, s.Server)
	if err != nil {
		return "", err
	}
	switch {
	case row == nil:
		st.forget()
		return "", fmt.Errorf("oauth token %s: %w", s.Server, ErrNoToken)
	case !s.sameSettings(row.Fingerprint):
		st.forget()
		changed := describeChange(s.changedSettings(row.Fingerprint))
		if !m.deleteChanged {
			return "", fmt.Errorf("oauth token %s: %w (%s)", s.Server, ErrSettingsChanged, changed)
		}
		m.log.Warn("oauth settings changed since authorization; deleting the stored token, authorize again", "account", s.Server, "changed", changed)
		if err := m.deleteRow(ctx, s.Server); err != nil {
			return "", err
		}
		return "", fmt.Errorf("oauth token %s: settings changed (%s), stored token deleted: %w", s.Server, changed, ErrNoToken)
	case row.Status == statusNeedsReauth:
		st.tok, st.unsaved, st.dead = nil, false, true
		return "", fmt.Errorf("oauth token %s: %s: %w", s.Server, row.LastError, ErrNeedsReauth)
	}
	if st.dead {
		// Someone authorized again since the grant died.
		st.forget()
	}
	stored, err := m.openRow(row)
	if err != nil {
		return "", err
	}
	tok := stored
	if st.unsaved && st.tok != nil {
		tok = st.tok // newer than the row: a save failed earlier
	}
	if !force && !st.unsaved && m.fresh(tok) {
		st.tok = tok
		return tok.AccessToken, nil
	}
	if err := m.retryWait(s, st); err != nil {
		return "", err
	}
	dctx, cancel := detach(ctx)
	defer cancel()
	if st.unsaved && m.fresh(tok) && !force {
		if err := m.saveToken(dctx, s, tok, true); err != nil {
			return "", fmt.Errorf("oauth token %s: %w: %w", s.Server, err, ErrTemporary)
		}
		st.unsaved = false
		return tok.AccessToken, nil
	}
	if tok.RefreshToken == "" {
		return "", m.dead(dctx, s, st, fmt.Errorf("oauth token %s: access token expired or rejected and no refresh token is stored: %w", s.Server, ErrNeedsReauth))
	}

	src := s.oauth2Config("").TokenSource(m.httpCtx(dctx, s.Server), &oauth2.Token{RefreshToken: tok.RefreshToken})
	nt, err := src.Token()
	if err != nil {
		err = classify("refresh", s.Server, s.TokenURL, err, tok.RefreshToken, tok.AccessToken, s.ClientSecret.Reveal())
		if errors.Is(err, ErrNeedsReauth) {
			return "", m.dead(dctx, s, st, err)
		}
		m.backoff(st, err)
		m.log.Warn("oauth token refresh failed; will retry", "account", s.Server, "err", err, "retry_at", st.retryAt.UTC())
		if lerr := m.setLastError(dctx, s.Server, err.Error()); lerr != nil {
			m.log.Warn("oauth: record refresh error", "account", s.Server, "err", lerr)
		}
		return "", err
	}
	m.stampExpiry(nt)
	rotated := nt.RefreshToken != "" && nt.RefreshToken != tok.RefreshToken
	if nt.RefreshToken == "" {
		nt.RefreshToken = tok.RefreshToken
	}
	st.tok = nt
	st.failures, st.retryAt, st.lastErr = 0, time.Time{}, nil
	if err := m.saveToken(dctx, s, nt, true); err != nil {
		// Keep the new token in memory and try to store it again on the
		// next call; do not hand it out before it is stored.
		st.unsaved = true
		return "", fmt.Errorf("oauth token %s: %w: %w", s.Server, err, ErrTemporary)
	}
	st.unsaved = false
	m.log.Debug("oauth token refreshed", "account", s.Server, "expiry", nt.Expiry.UTC(), "rotated", rotated)
	return nt.AccessToken, nil
}

// dead records a dead grant: status needs_reauth in the database, one
// error log line, and no more token requests until authorized again.
func (m *Manager) dead(ctx context.Context, s Settings, st *serverState, err error) error {
	st.tok, st.unsaved = nil, false
	if !st.dead {
		st.dead = true
		m.log.Error("oauth grant is no longer valid; run `mailworker oauth authorize`", "account", s.Server, "err", err)
	}
	if merr := m.markNeedsReauth(ctx, s.Server, err.Error()); merr != nil {
		return fmt.Errorf("%w (and %w)", err, merr)
	}
	return err
}

// appToken serves the client credentials flow: the token is fetched on
// demand and kept in memory only; there is no refresh token to store.
func (m *Manager) appToken(ctx context.Context, s Settings, st *serverState) (string, error) {
	if err := m.retryWait(s, st); err != nil {
		return "", err
	}
	cc := clientcredentials.Config{ClientID: s.ClientID, ClientSecret: s.ClientSecret.Reveal(),
		TokenURL: s.TokenURL, Scopes: s.Scopes, AuthStyle: s.authStyle}
	dctx, cancel := detach(ctx)
	defer cancel()
	tok, err := cc.Token(m.httpCtx(dctx, s.Server))
	if err != nil {
		err = classify("client credentials", s.Server, s.TokenURL, err, s.ClientSecret.Reveal())
		st.tok = nil
		if errors.Is(err, ErrNeedsReauth) {
			// Nothing to re-authorize: an administrator fixes the secret or
			// the consent. Retry rarely rather than never.
			if !st.dead {
				m.log.Error("oauth client credentials rejected; check the client secret and admin consent", "account", s.Server, "err", err)
			}
			st.dead = true
			st.failures, st.retryAt, st.lastErr = 0, m.now().Add(m.maxBackoff), err
			return "", err
		}
		m.backoff(st, err)
		m.log.Warn("oauth client credentials failed; will retry", "account", s.Server, "err", err, "retry_at", st.retryAt.UTC())
		return "", err
	}
	m.stampExpiry(tok)
	st.tok, st.dead = tok, false
	st.failures, st.retryAt, st.lastErr = 0, time.Time{}, nil
	m.log.Debug("oauth app token fetched", "account", s.Server, "expiry", tok.Expiry.UTC())
	return tok.AccessToken, nil
}

// stampExpiry recomputes tok.Expiry from expires_in on the Manager's clock
// (x/oauth2 stamps it with time.Now), so tests can move time.
func (m *Manager) stampExpiry(tok *oauth2.Token) {
	var secs float64
	switch v := tok.Extra("expires_in").(type) {
	case float64:
		secs = v
	case int64:
		secs = float64(v)
	case string:
		if _, err := fmt.Sscan(v, &secs); err != nil {
			return
		}
	default:
		return
	}
	if secs > 0 {
		tok.Expiry = m.now().Add(time.Duration(secs * float64(time.Second)))
	}
}
