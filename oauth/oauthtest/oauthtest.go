// Package oauthtest runs an in-process OAuth 2.0 authorization server for
// tests: RFC 6749 (authorization code, client credentials, refresh token
// with rotation), RFC 7636 PKCE (S256), RFC 7009 revocation and RFC 7662
// introspection, so that Dovecot's oauth2 passdb or a go-imap test server
// can validate the access tokens it issues.
//
// /authorize approves at once (as login_hint, else Options.Username) and
// redirects with code and state. Every secret it issues is recorded
// (Issued) so tests can grep logs and databases for them, and every request
// is counted (Counts).
package oauthtest

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// Options configure a Server. Zero values mean the documented defaults.
type Options struct {
	ClientID     string // default "mailworker-test"
	ClientSecret string // default a random secret (recorded in Issued)
	Username     string // approved user without login_hint; default "alice@example.test"
	// AccessTokenLifetime is expires_in of access tokens; default 1h.
	AccessTokenLifetime time.Duration
	// NoRotation keeps refresh tokens across refreshes (Google); by default
	// every refresh issues a new refresh token and the old one stops working.
	NoRotation bool
	// Clock is the server's time; default time.Now. Share a Clock with the
	// code under test to expire tokens without sleeping.
	Clock func() time.Time
	// RequirePKCE refuses authorization requests without an S256
	// code_challenge (error=invalid_request), for confidential clients
	// too, as RFC 9700 recommends.
	RequirePKCE bool
}

// Counts are the requests a Server has answered.
type Counts struct {
	Authorize         int
	AuthorizationCode int // token requests with grant_type authorization_code
	Refresh           int // ... refresh_token
	ClientCredentials int // ... client_credentials
	TokenErrors       int // token requests answered with an error
	PKCEVerified      int // authorization code exchanges whose code_verifier matched the challenge
	Revoke            int
	Introspect        int
}

// Token is the number of token endpoint requests of any grant type.
func (c Counts) Token() int { return c.AuthorizationCode + c.Refresh + c.ClientCredentials }

// Server is a running authorization server. Its methods are safe for
// concurrent use.
type Server struct {
	URL          string // base URL, e.g. http://127.0.0.1:41234
	ClientID     string
	ClientSecret string

	opts Options
	srv  *httptest.Server

	mu         sync.Mutex
	counts     Counts
	issued     []string
	codes      map[string]*authCode
	refresh    map[string]*grant
	access     map[string]*accessToken
	failNext   int
	failStatus int
	omitRT     bool
}

type grant struct {
	username, clientID, scope string
	public                    bool
	revoked                   bool
}

type authCode struct {
	g                      *grant
	redirectURI, challenge string
	used                   bool
	expires                time.Time
}

type accessToken struct {
	g        *grant // nil for client credentials
	username string
	scope    string
	expires  time.Time
	revoked  bool
}

// Start runs a Server until the test ends.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	if o.ClientID == "" {
		o.ClientID = "mailworker-test"
	}
	if o.Username == "" {
		o.Username = "alice@example.test"
	}
	if o.AccessTokenLifetime == 0 {
		o.AccessTokenLifetime = time.Hour
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	s := &Server{opts: o, ClientID: o.ClientID, codes: map[string]*authCode{}, refresh: map[string]*grant{}, access: map[string]*accessToken{}}
	if o.ClientSecret == "" {
		s.opts.ClientSecret = s.newSecret("cs")
	} else {
		s.issued = append(s.issued, o.ClientSecret)
	}
	s.ClientSecret = s.opts.ClientSecret
	mux := http.NewServeMux()
	mux.HandleFunc("GET /authorize", s.authorize)
	mux.HandleFunc("POST /token", s.token)
	mux.HandleFunc("POST /revoke", s.revoke)
	mux.HandleFunc("POST /introspect", s.introspect)
	s.srv = httptest.NewServer(mux)
	s.URL = s.srv.URL
	t.Cleanup(s.srv.Close)
	return s
}

// AuthURL, TokenURL, RevokeURL and IntrospectURL are the endpoints.
func (s *Server) AuthURL() string { return s.URL + "/authorize" }

// TokenURL is the token endpoint.
func (s *Server) TokenURL() string { return s.URL + "/token" }

// RevokeURL is the RFC 7009 endpoint.
func (s *Server) RevokeURL() string { return s.URL + "/revoke" }

// IntrospectURL is the RFC 7662 endpoint (form token=; no client auth).
func (s *Server) IntrospectURL() string { return s.URL + "/introspect" }

// Counts returns the request counters.
func (s *Server) Counts() Counts {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts
}

// Issued returns every secret the server issued or holds: the client
// secret, codes, access and refresh tokens.
func (s *Server) Issued() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.issued...)
}

// FailNext makes the next n token requests fail with HTTP status (e.g.
// 503) and a non-JSON body.
func (s *Server) FailNext(n, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failNext, s.failStatus = n, status
}

// OmitRefreshToken makes authorization code exchanges answer without a
// refresh token, as Google does after the first consent.
func (s *Server) OmitRefreshToken(omit bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.omitRT = omit
}

// IssueGrant mints a grant for username outside any flow (for set-token
// tests) and returns its access and refresh tokens.
func (s *Server) IssueGrant(username string) (accessTok, refreshTok string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := &grant{username: username, clientID: s.opts.ClientID}
	rt := s.newSecretLocked("rt")
	s.refresh[rt] = g
	return s.newAccessLocked(g, username, ""), rt
}

// RevokeUser kills every grant and access token of username, as when the
// user withdraws consent at the provider.
func (s *Server) RevokeUser(username string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, g := range s.refresh {
		if g.username == username {
			g.revoked = true
		}
	}
	for _, a := range s.access {
		if a.username == username {
			a.revoked = true
		}
	}
}

// ExpireAccessTokens makes every access token issued so far inactive at
// once, as a provider may before their expires_in (the client still
// believes them valid and must refresh when the resource server refuses).
func (s *Server) ExpireAccessTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range s.access {
		a.revoked = true
	}
}

// Active reports whether an access token is valid now, and for whom.
func (s *Server) Active(tok string) (username string, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.access[tok]
	if a == nil || a.revoked || (a.g != nil && a.g.revoked) || !s.opts.Clock().Before(a.expires) {
		return "", false
	}
	return a.username, true
}

// RefreshTokenValid reports whether rt would be accepted by a refresh.
func (s *Server) RefreshTokenValid(rt string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.refresh[rt]
	return g != nil && !g.revoked
}

func (s *Server) newSecret(prefix string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.newSecretLocked(prefix)
}

func (s *Server) newSecretLocked(prefix string) string {
	b := make([]byte, 24)
	rand.Read(b)
	v := prefix + "_" + base64.RawURLEncoding.EncodeToString(b)
	s.issued = append(s.issued, v)
	return v
}

func (s *Server) newAccessLocked(g *grant, username, scope string) string {
	at := s.newSecretLocked("at")
	s.access[at] = &accessToken{g: g, username: username, scope: scope, expires: s.opts.Clock().Add(s.opts.AccessTokenLifetime)}
	return at
}

func (s *Server) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.counts.Authorize++
	redirect, err := url.Parse(q.Get("redirect_uri"))
	if err != nil || redirect.Scheme == "" {
		http.Error(w, "bad redirect_uri", http.StatusBadRequest)
		return
	}
	back := redirect.Query()
	back.Set("state", q.Get("state"))
	switch {
	case q.Get("client_id") != s.opts.ClientID:
		back.Set("error", "unauthorized_client")
	case q.Get("response_type") != "code":
		back.Set("error", "unsupported_response_type")
	case q.Get("code_challenge") != "" && q.Get("code_challenge_method") != "S256":
		back.Set("error", "invalid_request")
		back.Set("error_description", "only S256 is supported")
	case s.opts.RequirePKCE && q.Get("code_challenge") == "":
		back.Set("error", "invalid_request")
		back.Set("error_description", "PKCE (S256 code_challenge) required")
	default:
		user := q.Get("login_hint")
		if user == "" {
			user = s.opts.Username
		}
		code := s.newSecretLocked("code")
		s.codes[code] = &authCode{
			g:           &grant{username: user, clientID: s.opts.ClientID, scope: q.Get("scope"), public: q.Get("code_challenge") != ""},
			redirectURI: q.Get("redirect_uri"), challenge: q.Get("code_challenge"),
			expires: s.opts.Clock().Add(10 * time.Minute),
		}
		back.Set("code", code)
	}
	redirect.RawQuery = back.Encode()
	http.Redirect(w, r, redirect.String(), http.StatusFound)
}

type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	RefreshToken string `json:"refresh_token,omitempty"`
	Scope        string `json:"scope,omitempty"`
}

func (s *Server) tokenError(w http.ResponseWriter, status int, code, desc string) {
	s.counts.TokenErrors++
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
}

// client authenticates the client (RFC 6749 section 2.3.1: basic or form).
// It returns whether a secret was presented and whether it was right.
func (s *Server) client(r *http.Request) (id string, withSecret, ok bool) {
	id, sec, basic := r.BasicAuth()
	if basic {
		id, _ = url.QueryUnescape(id)
		sec, _ = url.QueryUnescape(sec)
	} else {
		id, sec = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	if id != s.opts.ClientID {
		return id, sec != "", false
	}
	if sec == "" {
		return id, false, true
	}
	return id, true, subtle.ConstantTimeCompare([]byte(sec), []byte(s.opts.ClientSecret)) == 1
}

func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	gt := r.PostForm.Get("grant_type")
	switch gt {
	case "authorization_code":
		s.counts.AuthorizationCode++
	case "refresh_token":
		s.counts.Refresh++
	case "client_credentials":
		s.counts.ClientCredentials++
	}
	if s.failNext > 0 {
		s.failNext--
		s.counts.TokenErrors++
		http.Error(w, "upstream unavailable", s.failStatus)
		return
	}
	_, withSecret, ok := s.client(r)
	if !ok {
		s.tokenError(w, http.StatusUnauthorized, "invalid_client", "client authentication failed")
		return
	}
	now := s.opts.Clock()
	resp := tokenResponse{TokenType: "Bearer", ExpiresIn: int64(s.opts.AccessTokenLifetime / time.Second)}
	switch gt {
	case "authorization_code":
		c := s.codes[r.PostForm.Get("code")]
		switch {
		case c == nil || c.used || now.After(c.expires):
			s.tokenError(w, http.StatusBadRequest, "invalid_grant", "unknown, used or expired code")
			return
		case c.redirectURI != r.PostForm.Get("redirect_uri"):
			s.tokenError(w, http.StatusBadRequest, "invalid_grant", "redirect_uri mismatch")
			return
		case !c.g.public && !withSecret:
			s.tokenError(w, http.StatusUnauthorized, "invalid_client", "client secret required")
			return
		}
		c.used = true
		v := r.PostForm.Get("code_verifier")
		if c.challenge != "" || v != "" {
			sum := sha256.Sum256([]byte(v))
			if v == "" || base64.RawURLEncoding.EncodeToString(sum[:]) != c.challenge {
				s.tokenError(w, http.StatusBadRequest, "invalid_grant", "PKCE verification failed")
				return
			}
			s.counts.PKCEVerified++
		}
		resp.AccessToken = s.newAccessLocked(c.g, c.g.username, c.g.scope)
		if !s.omitRT {
			resp.RefreshToken = s.newSecretLocked("rt")
			s.refresh[resp.RefreshToken] = c.g
		}
		resp.Scope = c.g.scope
	case "refresh_token":
		rt := r.PostForm.Get("refresh_token")
		g := s.refresh[rt]
		switch {
		case g == nil || g.revoked:
			// Echo the token in the description: a careless client would
			// log it; mailworker must not.
			s.tokenError(w, http.StatusBadRequest, "invalid_grant", "refresh token "+rt+" is invalid or revoked")
			return
		case !g.public && !withSecret:
			s.tokenError(w, http.StatusUnauthorized, "invalid_client", "client secret required")
			return
		}
		resp.AccessToken = s.newAccessLocked(g, g.username, g.scope)
		if !s.opts.NoRotation {
			delete(s.refresh, rt)
			resp.RefreshToken = s.newSecretLocked("rt")
			s.refresh[resp.RefreshToken] = g
		}
		resp.Scope = g.scope
	case "client_credentials":
		if !withSecret {
			s.tokenError(w, http.StatusUnauthorized, "invalid_client", "client secret required")
			return
		}
		resp.AccessToken = s.newAccessLocked(nil, s.opts.ClientID, r.PostForm.Get("scope"))
		resp.Scope = r.PostForm.Get("scope")
	default:
		s.tokenError(w, http.StatusBadRequest, "unsupported_grant_type", gt)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(resp)
}

// revoke implements RFC 7009: 200 for any token, valid or not.
func (s *Server) revoke(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.counts.Revoke++
	if _, _, ok := s.client(r); !ok {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	tok := r.PostForm.Get("token")
	if g := s.refresh[tok]; g != nil {
		g.revoked = true // the whole grant, as Google does
	}
	if a := s.access[tok]; a != nil {
		a.revoked = true
	}
	w.WriteHeader(http.StatusOK)
}

// introspect implements RFC 7662 (section 2.2 response).
func (s *Server) introspect(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	s.counts.Introspect++
	s.mu.Unlock()
	tok := r.PostForm.Get("token")
	if tok == "" {
		// Dovecot's "get"/"auth" modes pass the token elsewhere.
		tok = strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	}
	user, ok := s.Active(tok)
	w.Header().Set("Content-Type", "application/json")
	if !ok {
		json.NewEncoder(w).Encode(map[string]any{"active": false})
		return
	}
	s.mu.Lock()
	a := s.access[tok]
	out := map[string]any{"active": true, "username": user, "client_id": s.opts.ClientID, "scope": a.scope, "exp": a.expires.Unix(), "token_type": "Bearer"}
	s.mu.Unlock()
	json.NewEncoder(w).Encode(out)
}

// Clock is a settable clock to share between a Server and the code under
// test, so tokens expire without sleeping.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock starts at the current time.
func NewClock() *Clock { return &Clock{t: time.Now()} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}
