package oauth_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/mailworker/mailworker/config"
	"github.com/mailworker/mailworker/oauth"
)

func TestResolveProviderDefaults(t *testing.T) {
	env := func(k string) string {
		if k == "CS" {
			return "client-secret-value"
		}
		return ""
	}
	srv := func(p config.Protocol, provider, flow, tenant string) config.Server {
		return config.Server{Name: "s", Protocol: p, Username: "u@example.test", Mailbox: "box@example.test",
			Auth: config.Auth{Method: config.AuthOAuth2, OAuth: config.OAuth{Provider: provider, Flow: flow, Tenant: tenant, ClientID: "cid", ClientSecretEnv: "CS"}}}
	}
	tests := []struct {
		name                         string
		srv                          config.Server
		authURL, tokenURL, revokeURL string
		scopes                       []string
	}{
		{"google imap", srv(config.ProtocolIMAPS, "google", "authorization_code", ""),
			"https://accounts.google.com/o/oauth2/auth", "https://oauth2.googleapis.com/token", oauth.GoogleRevokeURL,
			[]string{"https://mail.google.com/"}},
		{"microsoft imap delegated default tenant", srv(config.ProtocolIMAPS, "microsoft", "authorization_code", ""),
			"https://login.microsoftonline.com/organizations/oauth2/v2.0/authorize", "https://login.microsoftonline.com/organizations/oauth2/v2.0/token", "",
			[]string{"https://outlook.office.com/IMAP.AccessAsUser.All", "offline_access"}},
		{"microsoft imap app", srv(config.ProtocolIMAP, "microsoft", "client_credentials", "contoso.onmicrosoft.com"),
			"https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/authorize", "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token", "",
			[]string{"https://outlook.office365.com/.default"}},
		{"microsoft graph delegated", srv(config.ProtocolGraph, "microsoft", "pkce", "t1"),
			"https://login.microsoftonline.com/t1/oauth2/v2.0/authorize", "https://login.microsoftonline.com/t1/oauth2/v2.0/token", "",
			[]string{"https://graph.microsoft.com/Mail.ReadWrite", "offline_access"}},
		{"microsoft graph app", srv(config.ProtocolGraph, "microsoft", "client_credentials", "t1"),
			"https://login.microsoftonline.com/t1/oauth2/v2.0/authorize", "https://login.microsoftonline.com/t1/oauth2/v2.0/token", "",
			[]string{"https://graph.microsoft.com/.default"}},
		{"microsoft ews delegated", srv(config.ProtocolEWS, "microsoft", "authorization_code", "t1"),
			"https://login.microsoftonline.com/t1/oauth2/v2.0/authorize", "https://login.microsoftonline.com/t1/oauth2/v2.0/token", "",
			[]string{"https://outlook.office365.com/EWS.AccessAsUser.All", "offline_access"}},
		{"microsoft ews app", srv(config.ProtocolEWS, "microsoft", "client_credentials", "t1"),
			"https://login.microsoftonline.com/t1/oauth2/v2.0/authorize", "https://login.microsoftonline.com/t1/oauth2/v2.0/token", "",
			[]string{"https://outlook.office365.com/.default"}},
	}
	m := oauth.New(nil, nil, nil, nil)
	m.SetGetenv(env)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := m.Resolve(tc.srv)
			if err != nil {
				t.Fatal(err)
			}
			if s.AuthURL != tc.authURL || s.TokenURL != tc.tokenURL || s.RevokeURL != tc.revokeURL || !slices.Equal(s.Scopes, tc.scopes) {
				t.Fatalf("Resolve = auth %q token %q revoke %q scopes %q;\nwant auth %q token %q revoke %q scopes %q",
					s.AuthURL, s.TokenURL, s.RevokeURL, s.Scopes, tc.authURL, tc.tokenURL, tc.revokeURL, tc.scopes)
			}
			if s.ClientSecret.Reveal() != "client-secret-value" {
				t.Fatal("client secret not resolved")
			}
		})
	}

	errs := []struct {
		name string
		srv  config.Server
		want string
	}{
		{"google app-only", srv(config.ProtocolIMAPS, "google", "client_credentials", ""), "client_credentials"},
		{"microsoft app-only without tenant", srv(config.ProtocolIMAPS, "microsoft", "client_credentials", ""), "tenant"},
		{"custom without token_url", srv(config.ProtocolIMAPS, "custom", "authorization_code", ""), "token_url"},
		{"unknown provider", srv(config.ProtocolIMAPS, "yahoo", "authorization_code", ""), "unknown provider"},
		{"not oauth", config.Server{Name: "p", Auth: config.Auth{Method: config.AuthPassword}}, "oauth2"},
	}
	for _, tc := range errs {
		t.Run(tc.name, func(t *testing.T) {
			_, err := m.Resolve(tc.srv)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Resolve = %v, want an error about %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "client-secret-value") {
				t.Fatal("error reveals the client secret")
			}
		})
	}

	// The settings print without the secret.
	s, _ := m.Resolve(tests[0].srv)
	if strings.Contains(strings.Join([]string{s.ClientSecret.String(), sprint(s)}, ""), "client-secret-value") {
		t.Fatal("Settings print the client secret")
	}
	// Fingerprints differ when a bound setting changes and ignore scope order.
	a := srv(config.ProtocolIMAPS, "custom", "authorization_code", "")
	a.Auth.OAuth.TokenURL, a.Auth.OAuth.AuthURL, a.Auth.OAuth.Scopes = "https://t/token", "https://t/auth", []string{"x", "y"}
	b := a
	b.Auth.OAuth.Scopes = []string{"y", "x"}
	sa, _ := m.Resolve(a)
	sb, _ := m.Resolve(b)
	if sa.Fingerprint() != sb.Fingerprint() {
		t.Fatal("fingerprint depends on scope order")
	}
	b.Username = "other@example.test"
	if sb, _ = m.Resolve(b); sa.Fingerprint() == sb.Fingerprint() {
		t.Fatal("fingerprint ignores the mailbox")
	}
}

func sprint(v any) string { return strings.TrimSpace(fmt.Sprintf("%+v %#v %v", v, v, v)) }
