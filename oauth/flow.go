package oauth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"github.com/mailworker/mailworker/config"
)

// Authorization is an authorization code flow in progress.
type Authorization struct {
	// URL is the provider's consent page the administrator opens.
	URL string
	// State is the single-use state sent to the provider.
	State string
	// Binding ties the flow to whoever started it: the browser keeps it in
	// the cookie SetBindingCookie sets (HttpOnly, SameSite=Lax, StateTTL);
	// the CLI keeps it in memory for a pasted response. Exchange refuses
	// the state without it.
	Binding string
}

// StartAuthorization starts an authorization code flow of srv (flows
// authorization_code and pkce): it stores a random single-use state valid
// for StateTTL together with the sealed PKCE verifier and a hash of a
// random binding value. PKCE (S256) is used for every flow, with or
// without a client secret (RFC 9700 section 2.1.1; Google and Microsoft
// accept both together). redirectURL is where the provider sends the
// browser back; it must be registered with the provider.
func (m *Manager) StartAuthorization(ctx context.Context, srv config.Server, redirectURL string) (*Authorization, error) {
	s, err := m.Resolve(srv)
	if err != nil {
		return nil, err
	}
	if s.Flow != config.FlowAuthorizationCode && s.Flow != config.FlowPKCE {
		return nil, fmt.Errorf("oauth authorize %s: flow %s has no browser authorization", s.Server, s.Flow)
	}
	a := &Authorization{State: rand.Text(), Binding: rand.Text()}
	verifier := oauth2.GenerateVerifier()
	opts := []oauth2.AuthCodeOption{oauth2.S256ChallengeOption(verifier)}
	if s.forceConsent {
		opts = append(opts, oauth2.AccessTypeOffline, oauth2.ApprovalForce)
	}
	if s.Subject != "" {
		opts = append(opts, oauth2.SetAuthURLParam("login_hint", s.Subject))
	}
	if err := m.putState(ctx, a.State, s.Server, pending{Verifier: verifier, Binding: bindingHash(a.Binding)}, redirectURL); err != nil {
		return nil, err
	}
	a.URL = s.oauth2Config(redirectURL).AuthCodeURL(a.State, opts...)
	return a, nil
}

// ErrBinding means an authorization response carried a valid state but
// came from a browser (or process) other than the one that started the
// flow: its binding cookie is missing or different. Nothing is stored.
// errors.Is(err, ErrState) holds for it too.
var ErrBinding error = bindingError{}

type bindingError struct{}

func (bindingError) Error() string {
	return "oauth: the authorization was started in another browser, or its cookie expired; nothing was stored, start again"
}

func (bindingError) Is(target error) bool { return target == ErrState }

func bindingHash(b string) string {
	sum := sha256.Sum256([]byte("mailworker oauth binding\x00" + b))
	return hex.EncodeToString(sum[:])
}

// BindingCookieName is the cookie holding the binding of state. Each flow
// has its own, so two authorizations in one browser do not clash.
func BindingCookieName(state string) string {
	sum := sha256.Sum256([]byte(state))
	return "mailworker_oauth_" + hex.EncodeToString(sum[:8])
}

// SetBindingCookie sets the cookie that binds a to the browser: HttpOnly,
// SameSite=Lax (sent on the provider's top-level redirect back), valid for
// StateTTL, Secure when secure is set (HTTPS).
func SetBindingCookie(w http.ResponseWriter, a *Authorization, secure bool) {
	http.SetCookie(w, &http.Cookie{
		Name: BindingCookieName(a.State), Value: a.Binding, Path: "/",
		MaxAge: int(StateTTL / time.Second), HttpOnly: true, Secure: secure, SameSite: http.SameSiteLaxMode,
	})
}

// BindingFromRequest returns the binding cookie r carries for the state in
// its query, and a function that clears it on w.
func BindingFromRequest(r *http.Request) (binding string, clear func(http.ResponseWriter)) {
	name := BindingCookieName(r.URL.Query().Get("state"))
	clear = func(w http.ResponseWriter) {
		http.SetCookie(w, &http.Cookie{Name: name, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteLaxMode})
	}
	if c, err := r.Cookie(name); err == nil {
		return c.Value, clear
	}
	return "", clear
}

// Exchange completes an authorization: it checks and consumes state
// (single use, not expired), checks that binding is the one issued with
// it (else ErrBinding, and nothing is stored), exchanges code at the token
// endpoint with the PKCE verifier and stores the token. When the response
// has no refresh token (Google after the first consent) the stored one is
// kept. It returns the server the state was issued for.
func (m *Manager) Exchange(ctx context.Context, state, binding, code string) (string, error) {
	row, p, err := m.takeState(ctx, state)
	if err != nil {
		return "", err
	}
	if p.Binding == "" || subtle.ConstantTimeCompare([]byte(p.Binding), []byte(bindingHash(binding))) != 1 {
		return row.Server, ErrBinding
	}
	srv, ok := m.server(row.Server)
	if !ok {
		return "", fmt.Errorf("oauth exchange: server %s is not configured: %w", row.Server, ErrState)
	}
	s, err := resolve(srv, m.getenv)
	if err != nil {
		return "", err
	}
	st := m.state(s.Server)
	if err := st.acquire(ctx); err != nil {
		return "", fmt.Errorf("oauth exchange %s: %w", s.Server, err)
	}
	defer st.release()

	var opts []oauth2.AuthCodeOption
	if p.Verifier != "" {
		opts = append(opts, oauth2.VerifierOption(p.Verifier))
	}
	dctx, cancel := detach(ctx)
	defer cancel()
	tok, err := s.oauth2Config(row.RedirectURL).Exchange(m.httpCtx(dctx, s.Server), code, opts...)
	if err != nil {
		return s.Server, classify("exchange code", s.Server, s.TokenURL, err, code, p.Verifier, s.ClientSecret.Reveal())
	}
	m.stampExpiry(tok)
	if err := m.store(dctx, s, st, tok); err != nil {
		return s.Server, err
	}
	m.log.Info("oauth authorized", "account", s.Server, "flow", s.Flow, "refresh_token", tok.RefreshToken != "")
	return s.Server, nil
}

// store saves a newly obtained token (authorization or set-token), keeping
// the stored refresh token when tok has none and the settings are the same.
func (m *Manager) store(ctx context.Context, s Settings, st *serverState, tok *oauth2.Token) error {
	if tok.RefreshToken == "" {
		row, err := m.loadRow(ctx, s.Server)
		if err != nil {
			return err
		}
		if row != nil && s.sameSettings(row.Fingerprint) {
			old, err := m.openRow(row)
			if err != nil {
				return err
			}
			tok.RefreshToken = old.RefreshToken
		}
	}
	if err := m.saveToken(ctx, s, tok, false); err != nil {
		return err
	}
	st.forget()
	st.fingerprint = s.Fingerprint()
	st.tok = tok
	return nil
}

// SetToken stores a token obtained elsewhere (flow manual, or any
// delegated flow). tok needs an access token or a refresh token; without a
// refresh token the server needs authorization again once it expires.
func (m *Manager) SetToken(ctx context.Context, srv config.Server, tok *oauth2.Token) error {
	s, err := m.Resolve(srv)
	if err != nil {
		return err
	}
	if !s.delegated() {
		return fmt.Errorf("oauth set-token %s: flow client_credentials fetches its own tokens", s.Server)
	}
	if tok == nil || (tok.AccessToken == "" && tok.RefreshToken == "") {
		return fmt.Errorf("oauth set-token %s: need access_token or refresh_token", s.Server)
	}
	st := m.state(s.Server)
	if err := st.acquire(ctx); err != nil {
		return fmt.Errorf("oauth set-token %s: %w", s.Server, err)
	}
	defer st.release()
	t := *tok
	if err := m.store(ctx, s, st, &t); err != nil {
		return err
	}
	m.log.Info("oauth token set by hand", "account", s.Server, "refresh_token", t.RefreshToken != "")
	return nil
}

// Status states.
const (
	StateValid       = "valid"        // a usable access token or a refresh token is stored
	StateExpired     = "expired"      // the access token expired and there is no refresh token
	StateNeedsReauth = "needs_reauth" // the grant died; authorize again
	StateMissing     = "missing"      // nothing stored (never authorized, revoked, or deleted by run after a settings change)
	// StateSettingsChanged: the stored token was granted for other
	// settings (client_id, scopes, username, ...); authorize again. Only
	// `run` (which logs it) and `oauth revoke` delete it.
	StateSettingsChanged = "settings_changed"
	StateOnDemand        = "on_demand" // client credentials: fetched when needed, nothing stored
)

// Status describes one server's token without revealing it.
type Status struct {
	Server       string
	Provider     string
	Flow         string
	State        string    // one of the State* constants
	Expiry       time.Time // access token expiry, zero when unknown
	LastRefresh  time.Time // last successful refresh, zero when never
	LastError    string    // last failure, secret-free
	RefreshToken bool      // a refresh token is stored
	Changed      []string  // StateSettingsChanged: the settings that changed (names only)
}

// Status reports the token state of every OAuth server in srvs (others are
// skipped). It never contacts a provider and never changes what is stored:
// a token whose settings changed is reported as StateSettingsChanged.
func (m *Manager) Status(ctx context.Context, srvs []config.Server) ([]Status, error) {
	var out []Status
	for _, srv := range srvs {
		if srv.Auth.Method != config.AuthOAuth2 {
			continue
		}
		s, err := m.Resolve(srv)
		if err != nil {
			out = append(out, Status{Server: srv.Name, Provider: srv.Auth.OAuth.Provider, Flow: srv.Auth.OAuth.Flow, State: StateMissing, LastError: err.Error()})
			continue
		}
		stat := Status{Server: s.Server, Provider: s.Provider, Flow: s.Flow}
		if !s.delegated() {
			stat.State = StateOnDemand
			st := m.state(s.Server)
			if err := st.acquire(ctx); err != nil {
				return nil, err
			}
			if st.tok != nil && st.fingerprint == s.Fingerprint() {
				stat.State, stat.Expiry = StateValid, st.tok.Expiry
			} else if st.dead {
				stat.State = StateNeedsReauth
			}
			if st.lastErr != nil {
				stat.LastError = st.lastErr.Error()
			}
			st.release()
			out = append(out, stat)
			continue
		}
		row, err := m.loadRow(ctx, s.Server)
		if err != nil {
			return nil, err
		}
		if row != nil && !s.sameSettings(row.Fingerprint) {
			stat.State = StateSettingsChanged
			stat.Changed = s.changedSettings(row.Fingerprint)
			stat.LastError = fmt.Sprintf("settings changed since authorization (%s): re-authorize with `mailworker oauth authorize --server %s`",
				describeChange(stat.Changed), s.Server)
			out = append(out, stat)
			continue
		}
		if row == nil {
			stat.State = StateMissing
			out = append(out, stat)
			continue
		}
		stat.LastError = row.LastError
		stat.Expiry = row.Expiry.Time
		stat.LastRefresh = row.RefreshedAt.Time
		tok, err := m.openRow(row)
		if err != nil {
			return nil, err
		}
		stat.RefreshToken = tok.RefreshToken != ""
		switch {
		case row.Status == statusNeedsReauth:
			stat.State = StateNeedsReauth
		case !stat.RefreshToken && !tok.Expiry.IsZero() && !m.now().Before(tok.Expiry):
			stat.State = StateExpired
		default:
			stat.State = StateValid
		}
		out = append(out, stat)
	}
	return out, nil
}

// Revoke deletes srv's stored token and, when the provider has a
// revocation endpoint (RFC 7009), revokes the grant there too. The local
// token is deleted even when the provider call fails.
func (m *Manager) Revoke(ctx context.Context, srv config.Server) error {
	s, err := m.Resolve(srv)
	if err != nil {
		return err
	}
	st := m.state(s.Server)
	if err := st.acquire(ctx); err != nil {
		return fmt.Errorf("oauth revoke %s: %w", s.Server, err)
	}
	defer st.release()
	var tok *oauth2.Token
	if s.delegated() {
		row, err := m.loadRow(ctx, s.Server)
		if err != nil {
			return err
		}
		if row != nil {
			if tok, err = m.openRow(row); err != nil {
				m.log.Warn("oauth revoke: stored token unreadable; deleting it", "account", s.Server, "err", err)
				tok = nil
			}
			if err := m.deleteRow(ctx, s.Server); err != nil {
				return err
			}
		}
	} else {
		tok = st.tok
	}
	st.forget()
	if tok == nil || s.RevokeURL == "" {
		m.log.Info("oauth token deleted", "account", s.Server, "remote_revoke", false)
		return nil
	}
	value, hint := tok.RefreshToken, "refresh_token"
	if value == "" {
		value, hint = tok.AccessToken, "access_token"
	}
	if err := m.revokeRemote(ctx, s, value, hint); err != nil {
		return err
	}
	m.log.Info("oauth token deleted and revoked", "account", s.Server, "remote_revoke", true)
	return nil
}

// revokeRemote calls the RFC 7009 endpoint (section 2.1: form token and
// token_type_hint, client authentication as at the token endpoint).
func (m *Manager) revokeRemote(ctx context.Context, s Settings, value, hint string) error {
	form := url.Values{"token": {value}, "token_type_hint": {hint}}
	if s.authStyle != oauth2.AuthStyleInHeader {
		form.Set("client_id", s.ClientID)
		if !s.ClientSecret.Empty() {
			form.Set("client_secret", s.ClientSecret.Reveal())
		}
	}
	dctx, cancel := detach(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(dctx, http.MethodPost, s.RevokeURL, strings.NewReader(form.Encode()))
	if err != nil {
		return fmt.Errorf("oauth revoke %s at %s: %w", s.Server, s.RevokeURL, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if s.authStyle == oauth2.AuthStyleInHeader {
		req.SetBasicAuth(url.QueryEscape(s.ClientID), url.QueryEscape(s.ClientSecret.Reveal()))
	}
	resp, err := m.client(s.Server).Do(req)
	if err != nil {
		return fmt.Errorf("oauth revoke %s at %s: %s: %w", s.Server, s.RevokeURL, sanitize(err.Error(), value), ErrTemporary)
	}
	defer resp.Body.Close()
	// RFC 7009 section 2.2: 200 also for tokens that were already invalid.
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("oauth revoke %s at %s: http %d (local token deleted)", s.Server, s.RevokeURL, resp.StatusCode)
	}
	return nil
}

// Handler serves the browser side of authorization on the admin listener:
//
//	GET /oauth/start?server=NAME  redirects to the provider
//	GET /oauth/callback           receives code and state, stores the token
//
// The redirect URL is the server's redirect_url when configured, else this
// listener's own /oauth/callback. Servers are found among those given to
// SetServers (or seen by Resolve/Credentials). Protecting the listener (its
// bind address and bearer token) is the admin listener's job.
func (m *Manager) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /oauth/start", m.handleStart)
	mux.HandleFunc("GET /oauth/callback", m.handleCallback)
	return mux
}

func (m *Manager) handleStart(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("server")
	srv, ok := m.server(name)
	if !ok {
		http.Error(w, "unknown server", http.StatusNotFound)
		return
	}
	redirect := adminRedirect(srv.Auth.OAuth.RedirectURL, r)
	a, err := m.StartAuthorization(r.Context(), srv, redirect)
	if err != nil {
		m.log.Warn("oauth start failed", "account", name, "err", err)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	SetBindingCookie(w, a, r.TLS != nil)
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, a.URL, http.StatusFound)
}

func (m *Manager) handleCallback(w http.ResponseWriter, r *http.Request) {
	binding, clear := BindingFromRequest(r)
	clear(w)
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "no-referrer")
	server, err := m.Callback(r.Context(), r.URL.Query(), binding)
	if err != nil {
		m.log.Warn("oauth callback failed", "account", server, "err", err)
		code := http.StatusBadGateway
		if errors.Is(err, ErrState) || errors.Is(err, errDenied) {
			code = http.StatusBadRequest
		}
		http.Error(w, "authorization failed: "+err.Error(), code)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "mailworker: server %s is authorized. You can close this window.\n", server)
}

// adminRedirect is the redirect URL for an authorization started on the
// admin listener: the configured one, with this listener's port filled in
// when it is a loopback URL without a port (as registered for desktop
// clients), else this listener's own /oauth/callback.
func adminRedirect(configured string, r *http.Request) string {
	if configured != "" {
		u, err := url.Parse(configured)
		if err != nil || u.Port() != "" || !isLoopbackHost(u.Hostname()) {
			return configured
		}
		if _, port, err := net.SplitHostPort(r.Host); err == nil {
			u.Host = net.JoinHostPort(u.Hostname(), port)
		}
		return u.String()
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host + "/oauth/callback"
}

func isLoopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// errDenied is an error answer from the authorization endpoint.
var errDenied = errors.New("oauth: authorization denied")

// Callback completes an authorization from the redirect's query parameters
// (code and state, or error per RFC 6749 section 4.1.2.1) and the binding
// the caller holds for it (the browser's cookie, see BindingFromRequest).
// It returns the server name when the state was known.
func (m *Manager) Callback(ctx context.Context, q url.Values, binding string) (string, error) {
	if e := q.Get("error"); e != "" {
		if st := q.Get("state"); st != "" {
			if row, _, err := m.takeState(ctx, st); err == nil {
				return row.Server, fmt.Errorf("%w: %s: %s", errDenied, sanitize(e), sanitize(q.Get("error_description")))
			}
		}
		return "", fmt.Errorf("%w: %s", errDenied, sanitize(e))
	}
	state, code := q.Get("state"), q.Get("code")
	if state == "" || code == "" {
		return "", fmt.Errorf("%w: code and state are required", ErrState)
	}
	return m.Exchange(ctx, state, binding, code)
}
