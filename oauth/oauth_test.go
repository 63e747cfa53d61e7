package oauth_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"golang.org/x/oauth2"

	"github.com/mailworker/mailworker/config"
	"github.com/mailworker/mailworker/fetcher"
	"github.com/mailworker/mailworker/oauth"
	"github.com/mailworker/mailworker/oauth/oauthtest"
	"github.com/mailworker/mailworker/secret"
	"github.com/mailworker/mailworker/storage/storagetest"
)

var _ fetcher.Credentials = (*oauth.Credentials)(nil)

// env is one test's authorization server, database, key, clock and logs.
type env struct {
	t     testing.TB
	db    *sqlx.DB
	box   *secret.Box
	idp   *oauthtest.Server
	clock *oauthtest.Clock
	logs  *syncBuffer
	m     *oauth.Manager
	dir   string
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newEnv(t testing.TB, db *sqlx.DB, o oauthtest.Options) *env {
	t.Helper()
	clock := oauthtest.NewClock()
	o.Clock = clock.Now
	box, err := secret.NewBox(bytes.Repeat([]byte{42}, 32))
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, db: db, box: box, idp: oauthtest.Start(t, o), clock: clock, logs: &syncBuffer{}, dir: t.TempDir()}
	e.m = e.manager()
	t.Cleanup(e.checkNoSecrets)
	return e
}

// manager builds a Manager on the env's database, as after a restart.
func (e *env) manager() *oauth.Manager {
	m := oauth.New(e.db, e.box, e.logger(), nil)
	oauth.SetClock(m, e.clock.Now)
	return m
}

// logger writes debug-level JSON into the env's log buffer.
func (e *env) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// server returns a custom-provider server config pointing at the env's
// authorization server; the client secret is in a file.
func (e *env) server(name, flow, user string) config.Server {
	secretFile := filepath.Join(e.dir, name+".secret")
	if err := os.WriteFile(secretFile, []byte(e.idp.ClientSecret+"\n"), 0o600); err != nil {
		e.t.Fatal(err)
	}
	o := config.OAuth{
		Provider: config.ProviderCustom, Flow: flow, ClientID: e.idp.ClientID,
		AuthURL: e.idp.AuthURL(), TokenURL: e.idp.TokenURL(), RevokeURL: e.idp.RevokeURL(),
		Scopes: []string{"mail"},
	}
	if flow != config.FlowPKCE {
		o.ClientSecretFile = secretFile
	}
	return config.Server{Name: name, Protocol: config.ProtocolIMAPS, Host: "127.0.0.1", Username: user,
		Auth: config.Auth{Method: config.AuthOAuth2, OAuth: o}}
}

// authorize runs the browser side through the Manager's Handler.
func (e *env) authorize(srv config.Server) {
	e.t.Helper()
	e.m.SetServers([]config.Server{srv})
	admin := httptest.NewServer(e.m.Handler())
	defer admin.Close()
	resp, err := browser().Get(admin.URL + "/oauth/start?server=" + srv.Name)
	if err != nil {
		e.t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "is authorized") {
		e.t.Fatalf("authorize %s: %s %s", srv.Name, resp.Status, body)
	}
}

// browser is an HTTP client with its own cookie jar, as a browser.
func browser() *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar}
}

func (e *env) token(m *oauth.Manager, srv config.Server) string {
	e.t.Helper()
	tok, err := m.Credentials(srv).AccessToken(context.Background(), false)
	if err != nil {
		e.t.Fatalf("AccessToken(%s) = %v", srv.Name, err)
	}
	if _, ok := e.idp.Active(tok); !ok {
		e.t.Fatalf("AccessToken(%s) returned a token the server does not accept", srv.Name)
	}
	return tok
}

func (e *env) status(srv config.Server) oauth.Status {
	e.t.Helper()
	st, err := e.m.Status(context.Background(), []config.Server{srv})
	if err != nil || len(st) != 1 {
		e.t.Fatalf("Status = %v, %v", st, err)
	}
	return st[0]
}

// checkNoSecrets asserts that no secret the authorization server issued
// appears in the logs or in any raw column of the oauth tables.
func (e *env) checkNoSecrets() {
	var raw []string
	var rows []struct {
		Server     string `db:"server"`
		Ciphertext []byte `db:"ciphertext"`
		LastError  string `db:"last_error"`
	}
	if err := e.db.Select(&rows, `SELECT server, ciphertext, last_error FROM oauth_tokens`); err != nil {
		e.t.Errorf("read oauth_tokens: %v", err)
	}
	for _, r := range rows {
		raw = append(raw, string(r.Ciphertext), r.LastError)
	}
	var states []struct {
		State    string `db:"state"`
		Verifier []byte `db:"verifier"`
	}
	if err := e.db.Select(&states, `SELECT state, verifier FROM oauth_states`); err != nil {
		e.t.Errorf("read oauth_states: %v", err)
	}
	for _, s := range states {
		raw = append(raw, string(s.Verifier))
	}
	logs := e.logs.String()
	for _, sec := range e.idp.Issued() {
		if strings.Contains(logs, sec) {
			e.t.Errorf("logs contain issued secret %.8s...", sec)
		}
		for _, r := range raw {
			if strings.Contains(r, sec) {
				e.t.Errorf("database contains issued secret %.8s...", sec)
			}
		}
	}
}

// checkErr asserts err has no issued secret in its text.
func (e *env) checkErr(err error) {
	e.t.Helper()
	if err == nil {
		return
	}
	for _, sec := range e.idp.Issued() {
		if strings.Contains(err.Error(), sec) {
			e.t.Fatalf("error text contains issued secret %.8s...: %v", sec, err)
		}
	}
}

func TestAuthorizeHandler(t *testing.T) {
	storagetest.ForEachDriver(t, func(t *testing.T, db *sqlx.DB) {
		for _, flow := range []string{config.FlowAuthorizationCode, config.FlowPKCE} {
			t.Run(flow, func(t *testing.T) {
				e := newEnv(t, db, oauthtest.Options{})
				srv := e.server("box-"+strings.ReplaceAll(flow, "_", "-"), flow, "bob@example.test")
				if _, err := e.m.Credentials(srv).AccessToken(context.Background(), false); !errors.Is(err, oauth.ErrNoToken) || !errors.Is(err, oauth.ErrNeedsReauth) {
					t.Fatalf("before authorize: AccessToken = %v, want ErrNoToken wrapping ErrNeedsReauth", err)
				}
				if st := e.status(srv); st.State != oauth.StateMissing {
					t.Fatalf("status before authorize = %+v", st)
				}
				e.authorize(srv)
				tok := e.token(e.m, srv)
				if u, _ := e.idp.Active(tok); u != "bob@example.test" {
					t.Fatalf("token is for %q, want the login_hint user", u)
				}
				// Cached: no second token request.
				before := e.idp.Counts()
				if again := e.token(e.m, srv); again != tok {
					t.Fatal("second AccessToken returned another token")
				}
				if after := e.idp.Counts(); after.Token() != before.Token() {
					t.Fatalf("token requests %d -> %d; want the cached token", before.Token(), after.Token())
				}
				st := e.status(srv)
				if st.State != oauth.StateValid || !st.RefreshToken || st.Flow != flow || st.Expiry.IsZero() {
					t.Fatalf("status = %+v", st)
				}
			})
		}
	})
}

func TestStateIsSingleUseAndChecked(t *testing.T) {
	db := storagetest.Open(t, "sqlite")
	e := newEnv(t, db, oauthtest.Options{})
	srv := e.server("a", config.FlowPKCE, "a@example.test")
	e.m.SetServers([]config.Server{srv})
	admin := httptest.NewServer(e.m.Handler())
	defer admin.Close()
	// Stop at the callback so it can be replayed (by the same browser,
	// which holds the binding cookie).
	c, callback := browserToCallback(t, admin.URL, "a")
	get := func(u string) int {
		resp, err := c.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get(strings.Replace(callback, "state=", "state=forged", 1)); code != http.StatusBadRequest {
		t.Fatalf("forged state: status %d, want 400", code)
	}
	if code := get(callback); code != http.StatusOK {
		t.Fatalf("callback: status %d, want 200", code)
	}
	n := e.idp.Counts().AuthorizationCode
	if code := get(callback); code != http.StatusBadRequest {
		t.Fatalf("replayed callback: status %d, want 400", code)
	}
	if e.idp.Counts().AuthorizationCode != n {
		t.Fatal("replayed state reached the token endpoint")
	}

	// An expired state is refused.
	a, err := e.m.StartAuthorization(context.Background(), srv, "http://127.0.0.1/cb")
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(oauth.StateTTL + time.Second)
	if _, err := e.m.Exchange(context.Background(), a.State, a.Binding, "code"); !errors.Is(err, oauth.ErrState) {
		t.Fatalf("expired state: Exchange = %v, want ErrState", err)
	}
}

// browserToCallback starts an authorization of server at the admin
// handler in a new browser (own cookie jar) and stops at the provider's
// redirect to the callback, returning the browser and the callback URL.
func browserToCallback(t *testing.T, admin, server string) (*http.Client, string) {
	t.Helper()
	var callback string
	c := browser()
	c.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if req.URL.Path == "/oauth/callback" {
			callback = req.URL.String()
			return http.ErrUseLastResponse
		}
		return nil
	}
	resp, err := c.Get(admin + "/oauth/start?server=" + server)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if callback == "" {
		t.Fatal("no redirect to the callback")
	}
	return c, callback
}

// TestLoginCSRFRefused: a state obtained by one browser and completed from
// another (the attacker's consent, the victim's browser) is refused with a
// clear page, the code never reaches the token endpoint and nothing is
// stored; likewise without any cookie, and through the Go API with a wrong
// binding. The binding cookie is HttpOnly, SameSite=Lax and short-lived.
func TestLoginCSRFRefused(t *testing.T) {
	storagetest.ForEachDriver(t, func(t *testing.T, db *sqlx.DB) {
		e := newEnv(t, db, oauthtest.Options{})
		srv := e.server("csrf", config.FlowAuthorizationCode, "victim@example.test")
		e.m.SetServers([]config.Server{srv})
		admin := httptest.NewServer(e.m.Handler())
		defer admin.Close()

		// The binding cookie's attributes.
		noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := noFollow.Get(admin.URL + "/oauth/start?server=csrf")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		cs := resp.Cookies()
		if len(cs) != 1 || !cs[0].HttpOnly || cs[0].SameSite != http.SameSiteLaxMode || cs[0].MaxAge <= 0 || cs[0].MaxAge > int(oauth.StateTTL/time.Second) {
			t.Fatalf("binding cookie = %+v", cs)
		}

		rows := func() int {
			var n int
			if err := db.Get(&n, db.Rebind(`SELECT COUNT(*) FROM oauth_tokens WHERE server = ?`), srv.Name); err != nil {
				t.Fatal(err)
			}
			return n
		}
		// The victim's browser has its own flow in progress (its own cookie).
		victim, _ := browserToCallback(t, admin.URL, "csrf")
		_, attackerCallback := browserToCallback(t, admin.URL, "csrf")
		_, noCookieCallback := browserToCallback(t, admin.URL, "csrf")
		for _, c := range []struct {
			name   string
			client *http.Client
			url    string
		}{
			{"another browser's cookie", victim, attackerCallback},
			{"no cookie", http.DefaultClient, noCookieCallback},
		} {
			resp, err := c.client.Get(c.url)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "started in another browser") {
				t.Errorf("%s: callback = %s %s; want 400 naming the other browser", c.name, resp.Status, body)
			}
		}
		if n := e.idp.Counts().AuthorizationCode; n != 0 || rows() != 0 {
			t.Fatalf("after refused callbacks: %d code exchanges, %d token rows; want none", n, rows())
		}
		if st := e.status(srv); st.State != oauth.StateMissing {
			t.Fatalf("status = %+v", st)
		}

		a, err := e.m.StartAuthorization(context.Background(), srv, "http://127.0.0.1/cb")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.m.Exchange(context.Background(), a.State, "another-binding", "code"); !errors.Is(err, oauth.ErrBinding) || !errors.Is(err, oauth.ErrState) {
			t.Fatalf("Exchange with a wrong binding = %v; want ErrBinding", err)
		}
		if e.idp.Counts().AuthorizationCode != 0 || rows() != 0 {
			t.Fatal("a wrong binding reached the token endpoint or stored a token")
		}
	})
}

// TestPKCEInEveryFlow: both authorization code flows, with and without a
// client secret, send an S256 code_challenge that the provider verifies
// against the code_verifier at the exchange.
func TestPKCEInEveryFlow(t *testing.T) {
	db := storagetest.Open(t, "sqlite")
	for _, flow := range []string{config.FlowAuthorizationCode, config.FlowPKCE} {
		t.Run(flow, func(t *testing.T) {
			e := newEnv(t, db, oauthtest.Options{RequirePKCE: true})
			srv := e.server("pkce-"+strings.ReplaceAll(flow, "_", "-"), flow, "p@example.test")
			a, err := e.m.StartAuthorization(context.Background(), srv, "http://127.0.0.1/cb")
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(a.URL, "code_challenge_method=S256") || !strings.Contains(a.URL, "code_challenge=") {
				t.Fatalf("authorization URL without an S256 challenge: %s", a.URL)
			}
			e.authorize(srv)
			e.token(e.m, srv)
			if c := e.idp.Counts(); c.PKCEVerified != 1 || c.AuthorizationCode != 1 {
				t.Fatalf("counts = %+v; want one exchange, PKCE verified", c)
			}
		})
	}
}

func TestClientCredentials(t *testing.T) {
	storagetest.ForEachDriver(t, func(t *testing.T, db *sqlx.DB) {
		e := newEnv(t, db, oauthtest.Options{})
		srv := e.server("app", config.FlowClientCredentials, "shared@example.test")
		if st := e.status(srv); st.State != oauth.StateOnDemand {
			t.Fatalf("status before use = %+v", st)
		}
		tok := e.token(e.m, srv)
		if again := e.token(e.m, srv); again != tok || e.idp.Counts().ClientCredentials != 1 {
			t.Fatalf("app token not cached: %d requests", e.idp.Counts().ClientCredentials)
		}
		var n int
		if err := db.Get(&n, `SELECT COUNT(*) FROM oauth_tokens`); err != nil || n != 0 {
			t.Fatalf("client credentials token persisted: %d rows, %v", n, err)
		}
		if st := e.status(srv); st.State != oauth.StateValid {
			t.Fatalf("status = %+v", st)
		}
		e.clock.Advance(2 * time.Hour)
		if next := e.token(e.m, srv); next == tok || e.idp.Counts().ClientCredentials != 2 {
			t.Fatal("expired app token not renewed")
		}
		// The server rejecting the token forces a new one.
		if _, err := e.m.Credentials(srv).AccessToken(context.Background(), true); err != nil {
			t.Fatal(err)
		}
		if e.idp.Counts().ClientCredentials != 3 {
			t.Fatal("refresh=true did not fetch a new app token")
		}
	})
}

func TestSetTokenManual(t *testing.T) {
	storagetest.ForEachDriver(t, func(t *testing.T, db *sqlx.DB) {
		e := newEnv(t, db, oauthtest.Options{})
		srv := e.server("manual", config.FlowManual, "m@example.test")
		at, rt := e.idp.IssueGrant("m@example.test")
		err := e.m.SetToken(context.Background(), srv, &oauth2.Token{AccessToken: at, RefreshToken: rt, Expiry: e.clock.Now().Add(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		if got := e.token(e.m, srv); got != at {
			t.Fatal("set-token access token not served")
		}
		e.clock.Advance(2 * time.Hour)
		if got := e.token(e.m, srv); got == at {
			t.Fatal("expired access token served")
		}
		if e.idp.RefreshTokenValid(rt) {
			t.Fatal("refresh did not rotate the pasted refresh token")
		}

		// Without a refresh token, an expired token means needs_reauth.
		srv2 := e.server("manual2", config.FlowManual, "m2@example.test")
		at2, _ := e.idp.IssueGrant("m2@example.test")
		if err := e.m.SetToken(context.Background(), srv2, &oauth2.Token{AccessToken: at2, Expiry: e.clock.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		e.clock.Advance(2 * time.Hour)
		if st := e.status(srv2); st.State != oauth.StateExpired {
			t.Fatalf("status = %+v, want expired", st)
		}
		_, err = e.m.Credentials(srv2).AccessToken(context.Background(), false)
		if !errors.Is(err, oauth.ErrNeedsReauth) {
			t.Fatalf("AccessToken = %v, want ErrNeedsReauth", err)
		}
	})
}

func TestRefreshRotationPersisted(t *testing.T) {
	storagetest.ForEachDriver(t, func(t *testing.T, db *sqlx.DB) {
		e := newEnv(t, db, oauthtest.Options{})
		srv := e.server("rot", config.FlowAuthorizationCode, "r@example.test")
		e.authorize(srv)
		first := e.token(e.m, srv)
		for i := 1; i <= 3; i++ {
			e.clock.Advance(time.Hour - oauth.RefreshSkew/2) // inside the skew: refresh ahead
			// Restart: a new Manager reads everything from the database.
			m := e.manager()
			tok := e.token(m, srv)
			if tok == first {
				t.Fatalf("round %d: token not refreshed", i)
			}
			if got := e.idp.Counts().Refresh; got != i {
				t.Fatalf("round %d: %d refreshes", i, got)
			}
			st := e.status(srv)
			if st.LastRefresh.IsZero() || st.State != oauth.StateValid {
				t.Fatalf("status = %+v", st)
			}
			first = tok
		}
	})
}

func TestSingleFlight(t *testing.T) {
	db := storagetest.Open(t, "sqlite")
	e := newEnv(t, db, oauthtest.Options{})
	srv := e.server("sf", config.FlowPKCE, "s@example.test")
	e.authorize(srv)
	e.clock.Advance(2 * time.Hour)
	creds := e.m.Credentials(srv)
	var wg sync.WaitGroup
	toks := make([]string, 8)
	errs := make([]error, 8)
	for i := range toks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			toks[i], errs[i] = creds.AccessToken(context.Background(), false)
		}()
	}
	wg.Wait()
	for i := range toks {
		if errs[i] != nil || toks[i] != toks[0] {
			t.Fatalf("caller %d: %q, %v; want the same token", i, toks[i], errs[i])
		}
	}
	if n := e.idp.Counts().Refresh; n != 1 {
		t.Fatalf("%d refreshes for 8 concurrent callers, want 1", n)
	}
}

func TestGoogleStyleNoRefreshTokenKeepsStored(t *testing.T) {
	storagetest.ForEachDriver(t, func(t *testing.T, db *sqlx.DB) {
		e := newEnv(t, db, oauthtest.Options{NoRotation: true})
		srv := e.server("g", config.FlowAuthorizationCode, "g@example.test")
		e.authorize(srv)
		e.idp.OmitRefreshToken(true)
		e.authorize(srv) // second consent: no refresh token in the response
		if st := e.status(srv); !st.RefreshToken {
			t.Fatalf("stored refresh token lost: %+v", st)
		}
		e.clock.Advance(2 * time.Hour)
		e.token(e.manager(), srv)
		if e.idp.Counts().Refresh != 1 {
			t.Fatal("no refresh with the kept refresh token")
		}
	})
}

func TestInvalidGrantNeedsReauth(t *testing.T) {
	storagetest.ForEachDriver(t, func(t *testing.T, db *sqlx.DB) {
		e := newEnv(t, db, oauthtest.Options{})
		srv := e.server("dead", config.FlowAuthorizationCode, "d@example.test")
		other := e.server("alive", config.FlowAuthorizationCode, "o@example.test")
		e.authorize(srv)
		e.authorize(other)
		e.idp.RevokeUser("d@example.test")
		e.clock.Advance(2 * time.Hour)

		_, err := e.m.Credentials(srv).AccessToken(context.Background(), false)
		e.checkErr(err) // oauthtest echoes the refresh token in error_description
		var te *oauth.TokenError
		if !errors.Is(err, oauth.ErrNeedsReauth) || !errors.As(err, &te) || te.Code != "invalid_grant" {
			t.Fatalf("AccessToken = %v, want a TokenError invalid_grant wrapping ErrNeedsReauth", err)
		}
		refreshes := e.idp.Counts().Refresh
		for range 5 {
			_, err := e.m.Credentials(srv).AccessToken(context.Background(), true)
			if !errors.Is(err, oauth.ErrNeedsReauth) {
				t.Fatalf("later AccessToken = %v, want ErrNeedsReauth", err)
			}
			e.checkErr(err)
		}
		// A restarted worker does not retry either.
		if _, err := e.manager().Credentials(srv).AccessToken(context.Background(), false); !errors.Is(err, oauth.ErrNeedsReauth) {
			t.Fatalf("after restart: %v", err)
		}
		if got := e.idp.Counts().Refresh; got != refreshes {
			t.Fatalf("token endpoint called %d more times after invalid_grant", got-refreshes)
		}
		if n := strings.Count(e.logs.String(), `"level":"ERROR"`); n != 1 {
			t.Fatalf("%d error log lines, want 1:\n%s", n, e.logs.String())
		}
		st := e.status(srv)
		if st.State != oauth.StateNeedsReauth || !strings.Contains(st.LastError, "invalid_grant") {
			t.Fatalf("status = %+v", st)
		}
		// The other server is unaffected.
		e.token(e.m, other)
		// Authorizing again heals it.
		e.authorize(srv)
		e.token(e.m, srv)
		if st := e.status(srv); st.State != oauth.StateValid || st.LastError != "" {
			t.Fatalf("status after re-authorization = %+v", st)
		}
	})
}

// TestSettingsChangeKeptOrDeleted: a token granted for other settings is
// refused with ErrSettingsChanged and reported as settings_changed, with
// the changed setting named, while the row stays (status, test-connection
// and other read-only users); only a Manager set to delete changed tokens
// (`mailworker run`) deletes it, logging the setting's name, not its value.
func TestSettingsChangeKeptOrDeleted(t *testing.T) {
	tests := []struct {
		name   string
		change func(*config.Server)
		value  string // the new value, which must not be logged
	}{
		{"client_id", func(s *config.Server) { s.Auth.OAuth.ClientID = "another-client" }, "another-client"},
		{"scopes", func(s *config.Server) { s.Auth.OAuth.Scopes = []string{"mail", "offline"} }, "offline"},
		{"username", func(s *config.Server) { s.Username = "someone-else@example.test" }, "someone-else"},
		{"token_url", func(s *config.Server) { s.Auth.OAuth.TokenURL += "?v=2" }, "?v=2"},
	}
	storagetest.ForEachDriver(t, func(t *testing.T, db *sqlx.DB) {
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				e := newEnv(t, db, oauthtest.Options{})
				srv := e.server("chg-"+strings.ReplaceAll(tc.name, "_", "-"), config.FlowAuthorizationCode, "c@example.test")
				e.authorize(srv)
				e.token(e.m, srv)
				tc.change(&srv)
				rows := func() int {
					var n int
					if err := db.Get(&n, db.Rebind(`SELECT COUNT(*) FROM oauth_tokens WHERE server = ?`), srv.Name); err != nil {
						t.Fatal(err)
					}
					return n
				}

				st := e.status(srv)
				if st.State != oauth.StateSettingsChanged || len(st.Changed) != 1 || st.Changed[0] != tc.name ||
					!strings.Contains(st.LastError, "re-authorize") || rows() != 1 {
					t.Fatalf("status after changing %s = %+v, %d rows; want settings_changed naming it, row kept", tc.name, st, rows())
				}
				_, err := e.m.Credentials(srv).AccessToken(context.Background(), false)
				if !errors.Is(err, oauth.ErrSettingsChanged) || !errors.Is(err, oauth.ErrNeedsReauth) || rows() != 1 {
					t.Fatalf("AccessToken without deletion = %v, %d rows; want ErrSettingsChanged, row kept", err, rows())
				}

				run := e.manager()
				run.SetDeleteChangedTokens(true)
				_, err = run.Credentials(srv).AccessToken(context.Background(), false)
				if !errors.Is(err, oauth.ErrNoToken) || rows() != 0 {
					t.Fatalf("AccessToken in run = %v, %d rows; want ErrNoToken, row deleted", err, rows())
				}
				logs := e.logs.String()
				if !strings.Contains(logs, `"changed":"`+tc.name+`"`) || strings.Contains(logs, tc.value) {
					t.Errorf("deletion log must name %s and not its value:\n%s", tc.name, logs)
				}
				if st := e.status(srv); st.State != oauth.StateMissing {
					t.Fatalf("status after deletion = %+v", st)
				}
			})
		}
	})
}

func TestTemporaryFailureBacksOff(t *testing.T) {
	db := storagetest.Open(t, "sqlite")
	e := newEnv(t, db, oauthtest.Options{})
	srv := e.server("tmp", config.FlowAuthorizationCode, "t@example.test")
	e.authorize(srv)
	e.clock.Advance(2 * time.Hour)
	e.idp.FailNext(1, http.StatusServiceUnavailable)
	_, err := e.m.Credentials(srv).AccessToken(context.Background(), false)
	if !errors.Is(err, oauth.ErrTemporary) || errors.Is(err, oauth.ErrNeedsReauth) {
		t.Fatalf("AccessToken = %v, want ErrTemporary", err)
	}
	n := e.idp.Counts().Refresh
	_, err = e.m.Credentials(srv).AccessToken(context.Background(), false)
	if !errors.Is(err, oauth.ErrTemporary) || e.idp.Counts().Refresh != n {
		t.Fatalf("during backoff: %v, %d requests; want ErrTemporary without a request", err, e.idp.Counts().Refresh-n)
	}
	if st := e.status(srv); st.State != oauth.StateValid || st.LastError == "" {
		t.Fatalf("status = %+v; want valid with the last error", st)
	}
	e.clock.Advance(time.Minute)
	e.token(e.m, srv)
}

func TestRevoke(t *testing.T) {
	storagetest.ForEachDriver(t, func(t *testing.T, db *sqlx.DB) {
		e := newEnv(t, db, oauthtest.Options{})
		srv := e.server("rev", config.FlowAuthorizationCode, "v@example.test")
		e.authorize(srv)
		tok := e.token(e.m, srv)
		if err := e.m.Revoke(context.Background(), srv); err != nil {
			t.Fatal(err)
		}
		if e.idp.Counts().Revoke != 1 {
			t.Fatal("revocation endpoint not called")
		}
		if _, ok := e.idp.Active(tok); ok {
			t.Fatal("grant still active at the provider")
		}
		if st := e.status(srv); st.State != oauth.StateMissing {
			t.Fatalf("status = %+v", st)
		}
		if _, err := e.m.Credentials(srv).AccessToken(context.Background(), false); !errors.Is(err, oauth.ErrNoToken) {
			t.Fatalf("AccessToken after revoke = %v", err)
		}
	})
}

func TestCallbackErrorAndUnreachableProvider(t *testing.T) {
	db := storagetest.Open(t, "sqlite")
	e := newEnv(t, db, oauthtest.Options{})
	srv := e.server("err", config.FlowAuthorizationCode, "x@example.test")
	e.m.SetServers([]config.Server{srv})
	a, err := e.m.StartAuthorization(context.Background(), srv, "http://127.0.0.1/cb")
	if err != nil {
		t.Fatal(err)
	}
	admin := httptest.NewServer(e.m.Handler())
	defer admin.Close()
	resp, err := http.Get(admin.URL + "/oauth/callback?error=access_denied&state=" + a.State)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("denied callback: %s", resp.Status)
	}
	if st := e.status(srv); st.State != oauth.StateMissing {
		t.Fatalf("status = %+v", st)
	}
	if resp, err := http.Get(admin.URL + "/oauth/start?server=nope"); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("start of an unknown server: %v %v", resp, err)
	}

	// A token endpoint nobody listens on is a temporary failure.
	e.authorize(srv)
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close()
	e.clock.Advance(2 * time.Hour)
	srv.Auth.OAuth.TokenURL = deadURL + "/token"
	// The token URL is part of the fingerprint: use a fresh authorization.
	_, err = e.m.Credentials(srv).AccessToken(context.Background(), false)
	if !errors.Is(err, oauth.ErrSettingsChanged) {
		t.Fatalf("AccessToken after token_url change = %v, want ErrSettingsChanged", err)
	}
	at, rt := e.idp.IssueGrant("x@example.test")
	if err := e.m.SetToken(context.Background(), srv, &oauth2.Token{AccessToken: at, RefreshToken: rt, Expiry: e.clock.Now().Add(-time.Minute)}); err != nil {
		t.Fatal(err)
	}
	_, err = e.m.Credentials(srv).AccessToken(context.Background(), false)
	if !errors.Is(err, oauth.ErrTemporary) || errors.Is(err, oauth.ErrNeedsReauth) {
		t.Fatalf("unreachable token endpoint: %v, want ErrTemporary", err)
	}
	e.checkErr(err)
}

func TestHandlerLoopbackRedirectGetsListenerPort(t *testing.T) {
	db := storagetest.Open(t, "sqlite")
	e := newEnv(t, db, oauthtest.Options{})
	srv := e.server("lb", config.FlowPKCE, "l@example.test")
	srv.Auth.OAuth.RedirectURL = "http://127.0.0.1/oauth/callback" // as registered for the CLI
	e.authorize(srv)
	e.token(e.m, srv)
}
