package oauth

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/endpoints"

	"github.com/mailworker/mailworker/config"
	"github.com/mailworker/mailworker/secret"
)

// Provider defaults. Explicit auth_url, token_url, revoke_url and scopes in
// the configuration override them.
const (
	// GoogleScope is full IMAP access to Gmail.
	GoogleScope = "https://mail.google.com/"
	// GoogleRevokeURL is Google's RFC 7009 revocation endpoint.
	GoogleRevokeURL = "https://oauth2.googleapis.com/revoke"

	// MicrosoftDefaultTenant is used when tenant is empty: work and school
	// accounts of any tenant (delegated flows only).
	MicrosoftDefaultTenant = "organizations"

	msIMAPDelegated  = "https://outlook.office.com/IMAP.AccessAsUser.All"
	msEWSDelegated   = "https://outlook.office365.com/EWS.AccessAsUser.All"
	msGraphDelegated = "https://graph.microsoft.com/Mail.ReadWrite"
	msExchangeApp    = "https://outlook.office365.com/.default"
	msGraphApp       = "https://graph.microsoft.com/.default"
	msOffline        = "offline_access"

	// DefaultRedirectURL is used by `mailworker oauth authorize` when none is
	// configured: a loopback address, on a port chosen at run time (Google
	// desktop clients and Microsoft public clients accept any loopback port).
	DefaultRedirectURL = "http://127.0.0.1/oauth/callback"
)

// Settings is a server's OAuth configuration with provider defaults applied
// and the client secret resolved. It prints without the secret.
type Settings struct {
	Server       string // config name of the mail server
	Provider     string // google | microsoft | custom
	Tenant       string // microsoft only
	Flow         string // one of the config.Flow* constants
	ClientID     string
	ClientSecret secret.String // empty for public (PKCE) clients
	AuthURL      string        // authorization endpoint; empty for client_credentials
	TokenURL     string
	RevokeURL    string // RFC 7009 endpoint; empty when the provider has none
	Scopes       []string
	// RedirectURL is the configured redirect URL, or "" (then the CLI uses
	// DefaultRedirectURL and the admin handler its own /oauth/callback).
	RedirectURL string
	// Subject is the mailbox the grant is for (username, or the Graph
	// mailbox); sent as login_hint and part of the fingerprint.
	Subject string

	// forceConsent asks for prompt=consent and access_type=offline
	// (Google issues a refresh token only then).
	forceConsent bool
	authStyle    oauth2.AuthStyle
}

// Fingerprint identifies the settings a token was obtained with: a token
// stored under another fingerprint was granted for other settings. `run`
// deletes such a token (see SetDeleteChangedTokens); status commands only
// report it.
func (s Settings) Fingerprint() string {
	h := sha256.New()
	for _, f := range s.boundFields() {
		fmt.Fprintf(h, "%d:%s\n", len(f.value), f.value)
	}
	return hex.EncodeToString(h.Sum(nil))
}

type boundField struct{ name, value string }

// boundFields are the settings a grant is bound to, in fingerprint order.
func (s Settings) boundFields() []boundField {
	scopes := slices.Clone(s.Scopes)
	slices.Sort(scopes)
	return []boundField{
		{"provider", s.Provider}, {"tenant", s.Tenant}, {"client_id", s.ClientID}, {"token_url", s.TokenURL},
		{"scopes", strings.Join(scopes, " ")}, {"username", strings.ToLower(s.Subject)},
	}
}

// fingerprintRecord is what is stored with a token: the Fingerprint, then
// a short hash per bound setting, so that a change can be named (never
// shown: the values) without storing the settings.
func (s Settings) fingerprintRecord() string {
	var b strings.Builder
	b.WriteString(s.Fingerprint())
	for i, f := range s.boundFields() {
		if i == 0 {
			b.WriteByte(';')
		} else {
			b.WriteByte(',')
		}
		b.WriteString(f.name + "=" + fieldHash(f))
	}
	return b.String()
}

func fieldHash(f boundField) string {
	sum := sha256.Sum256([]byte(f.name + "\x00" + f.value))
	return hex.EncodeToString(sum[:6])
}

// sameSettings reports whether a stored fingerprint record (or a bare
// fingerprint written by an older version) matches s.
func (s Settings) sameSettings(stored string) bool {
	fp, _, _ := strings.Cut(stored, ";")
	return fp == s.Fingerprint()
}

// changedSettings names the bound settings that differ between a stored
// fingerprint record and s; nil when the record does not say (written by
// an older version).
func (s Settings) changedSettings(stored string) []string {
	_, fields, ok := strings.Cut(stored, ";")
	if !ok {
		return nil
	}
	old := map[string]string{}
	for _, kv := range strings.Split(fields, ",") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			old[k] = v
		}
	}
	var out []string
	for _, f := range s.boundFields() {
		if old[f.name] != fieldHash(f) {
			out = append(out, f.name)
		}
	}
	return out
}

// describeChange is "client_id, scopes", or "unknown: stored by an older
// version" when the record does not name them.
func describeChange(changed []string) string {
	if len(changed) == 0 {
		return "which one is not recorded"
	}
	return strings.Join(changed, ", ")
}

// delegated reports whether the flow acts for a user (and has a refresh
// token to store).
func (s Settings) delegated() bool { return s.Flow != config.FlowClientCredentials }

func (s Settings) oauth2Config(redirectURL string) *oauth2.Config {
	return &oauth2.Config{
		ClientID:     s.ClientID,
		ClientSecret: s.ClientSecret.Reveal(),
		Endpoint:     oauth2.Endpoint{AuthURL: s.AuthURL, TokenURL: s.TokenURL, AuthStyle: s.authStyle},
		RedirectURL:  redirectURL,
		Scopes:       s.Scopes,
	}
}

// Resolve applies provider defaults to srv's auth.oauth block and resolves
// the client secret. It does not contact anyone. The server is remembered
// so that Handler can find it by name.
func (m *Manager) Resolve(srv config.Server) (Settings, error) {
	s, err := resolve(srv, m.getenv)
	if err != nil {
		return Settings{}, err
	}
	m.remember(srv)
	return s, nil
}

func resolve(srv config.Server, getenv func(string) string) (Settings, error) {
	if srv.Auth.Method != config.AuthOAuth2 {
		return Settings{}, fmt.Errorf("oauth: server %s: %w", srv.Name, ErrNotOAuth)
	}
	o := srv.Auth.OAuth
	s := Settings{
		Server:      srv.Name,
		Provider:    strings.ToLower(o.Provider),
		Flow:        o.Flow,
		ClientID:    o.ClientID,
		AuthURL:     o.AuthURL,
		TokenURL:    o.TokenURL,
		RevokeURL:   o.RevokeURL,
		Scopes:      slices.Clone(o.Scopes),
		RedirectURL: o.RedirectURL,
		Subject:     srv.Username,
	}
	if srv.Protocol == config.ProtocolGraph && srv.Mailbox != "" {
		s.Subject = srv.Mailbox
	}
	if s.Subject == "" {
		s.Subject = srv.Impersonate
	}
	sec, err := clientSecret(o, getenv)
	if err != nil {
		return Settings{}, fmt.Errorf("oauth: server %s: %w", srv.Name, err)
	}
	s.ClientSecret = sec
	if s.Flow == "" {
		s.Flow = config.FlowAuthorizationCode
		if sec.Empty() {
			s.Flow = config.FlowPKCE
		}
	}
	switch s.Flow {
	case config.FlowAuthorizationCode, config.FlowPKCE, config.FlowClientCredentials, config.FlowManual:
	default:
		return Settings{}, fmt.Errorf("oauth: server %s: unknown flow %q (want authorization_code, pkce, client_credentials or manual)", srv.Name, s.Flow)
	}
	app := s.Flow == config.FlowClientCredentials

	switch s.Provider {
	case config.ProviderGoogle:
		if app {
			return Settings{}, fmt.Errorf("oauth: server %s: google has no client_credentials grant for Gmail (use a delegated flow)", srv.Name)
		}
		def(&s.AuthURL, endpoints.Google.AuthURL)
		def(&s.TokenURL, endpoints.Google.TokenURL)
		def(&s.RevokeURL, GoogleRevokeURL)
		if len(s.Scopes) == 0 {
			s.Scopes = []string{GoogleScope}
		}
		s.forceConsent = true
		s.authStyle = oauth2.AuthStyleInParams
	case config.ProviderMicrosoft:
		s.Tenant = o.Tenant
		if s.Tenant == "" {
			s.Tenant = MicrosoftDefaultTenant
		}
		if app && (s.Tenant == "organizations" || s.Tenant == "common" || s.Tenant == "consumers") {
			return Settings{}, fmt.Errorf("oauth: server %s: client_credentials needs a concrete microsoft tenant (id or domain), not %q", srv.Name, s.Tenant)
		}
		ep := endpoints.AzureAD(s.Tenant) // v2.0 endpoints; not endpoints.Microsoft (consumer login.live.com)
		def(&s.AuthURL, ep.AuthURL)
		def(&s.TokenURL, ep.TokenURL)
		if len(s.Scopes) == 0 {
			s.Scopes = microsoftScopes(srv.Protocol, app)
		}
		s.authStyle = oauth2.AuthStyleInParams
	case config.ProviderCustom, "":
		s.Provider = config.ProviderCustom
		if s.TokenURL == "" {
			return Settings{}, fmt.Errorf("oauth: server %s: provider custom needs token_url", srv.Name)
		}
		if s.AuthURL == "" && (s.Flow == config.FlowAuthorizationCode || s.Flow == config.FlowPKCE) {
			return Settings{}, fmt.Errorf("oauth: server %s: provider custom needs auth_url for flow %s", srv.Name, s.Flow)
		}
		s.authStyle = oauth2.AuthStyleInHeader
		if sec.Empty() {
			s.authStyle = oauth2.AuthStyleInParams
		}
	default:
		return Settings{}, fmt.Errorf("oauth: server %s: unknown provider %q (want google, microsoft or custom)", srv.Name, o.Provider)
	}
	if s.ClientID == "" && s.Flow != config.FlowManual {
		return Settings{}, fmt.Errorf("oauth: server %s: client_id is required for flow %s", srv.Name, s.Flow)
	}
	if (s.Flow == config.FlowAuthorizationCode || app) && sec.Empty() {
		return Settings{}, fmt.Errorf("oauth: server %s: flow %s needs client_secret_env or client_secret_file", srv.Name, s.Flow)
	}
	return s, nil
}

func microsoftScopes(p config.Protocol, app bool) []string {
	switch {
	case p == config.ProtocolGraph && app:
		return []string{msGraphApp}
	case p == config.ProtocolGraph:
		return []string{msGraphDelegated, msOffline}
	case app:
		return []string{msExchangeApp}
	case p == config.ProtocolEWS:
		return []string{msEWSDelegated, msOffline}
	default:
		return []string{msIMAPDelegated, msOffline}
	}
}

func def(p *string, v string) {
	if *p == "" {
		*p = v
	}
}

// clientSecret reads the client secret from client_secret_env or
// client_secret_file. Neither set is not an error (public clients).
func clientSecret(o config.OAuth, getenv func(string) string) (secret.String, error) {
	if o.ClientSecretEnv == "" && o.ClientSecretFile == "" {
		return secret.String{}, nil
	}
	return o.ClientSecretFrom(getenv)
}
