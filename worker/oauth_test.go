package worker

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/mailworker/mailworker/config"
	"github.com/mailworker/mailworker/imaptest"
	"github.com/mailworker/mailworker/logging"
	"github.com/mailworker/mailworker/oauth/oauthtest"
	"github.com/mailworker/mailworker/storage/storagetest"
)

// TestOAuthEmailDebugLeaksNoSecret is a full worker run with email_debug
// against Dovecot's oauth2 passdb, with access tokens so short-lived that
// every fetch refreshes (and rotates the refresh token). The captured
// debug log holds the transcript and not one of the secrets the
// authorization server issued, nor the client secret.
func TestOAuthEmailDebugLeaksNoSecret(t *testing.T) {
	idp := oauthtest.Start(t, oauthtest.Options{Username: testUser, AccessTokenLifetime: 30 * time.Second})
	d := imaptest.StartDovecot(t, imaptest.DovecotOptions{IntrospectionURL: idp.IntrospectURL()})
	d.SeedMaildir(testUser, "INBOX", [][]byte{message(0, 4096)})
	b := startBroker(t)

	const secretEnv = "MW_TEST_CLIENT_SECRET"
	srv := imapServer("oauthbox", d, "mark_seen")
	srv.EmailDebug = true
	srv.Auth = config.Auth{Method: config.AuthOAuth2, OAuth: config.OAuth{
		Provider: config.ProviderCustom, Flow: config.FlowManual,
		ClientID: idp.ClientID, ClientSecretEnv: secretEnv,
		TokenURL: idp.TokenURL(), Scopes: []string{"mail"},
	}}
	cfg := testConfig(t, storagetest.Drivers[0], b.url(), srv)
	var logs logBuffer
	f, err := logging.New(logging.Options{Writer: &logs, Format: "json"})
	if err != nil {
		t.Fatal(err)
	}
	env := func(k string) string {
		if k == secretEnv {
			return idp.ClientSecret
		}
		return ""
	}
	ctx := context.Background()
	w, err := Open(ctx, Options{Config: cfg, Logs: f, Getenv: env})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	access, refresh := idp.IssueGrant(testUser)
	if err := w.Tokens().SetToken(ctx, srv, &oauth2.Token{AccessToken: access, RefreshToken: refresh, Expiry: time.Now().Add(30 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	const runs = 3
	for i := 0; i < runs; i++ {
		if i > 0 {
			d.SeedMaildir(testUser, "INBOX", [][]byte{message(i, 4096)})
		}
		if err := w.RunOnce(ctx); err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
	}
	if got := b.count(t); got != runs {
		t.Fatalf("%d events; want %d", got, runs)
	}
	if n := idp.Counts().Refresh; n < runs {
		t.Fatalf("%d refreshes; want one per run at least (tokens live 30s, refreshed a minute early)", n)
	}
	out := logs.String()
	if !strings.Contains(out, "AUTHENTICATE") || !strings.Contains(out, "UID FETCH") {
		t.Fatalf("no IMAP transcript in the email_debug log:\n%s", out)
	}
	secrets := idp.Issued()
	if len(secrets) < 2*runs {
		t.Fatalf("authorization server reports only %d secrets", len(secrets))
	}
	for _, s := range secrets {
		if strings.Contains(out, s) {
			t.Errorf("a secret issued by the authorization server appears in the log (%d chars starting %q)", len(s), s[:min(4, len(s))])
		}
	}
	evs := b.events(t)
	for _, ev := range evs {
		raw := fmt.Sprintf("%+v", ev)
		for _, s := range secrets {
			if strings.Contains(raw, s) {
				t.Errorf("a secret appears in event %s", ev.ID)
			}
		}
	}
}
