package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mailworker/mailworker/config"
	"github.com/mailworker/mailworker/imaptest"
	"github.com/mailworker/mailworker/logging"
	"github.com/mailworker/mailworker/oauth/oauthtest"
	"github.com/mailworker/mailworker/secret"
	"github.com/mailworker/mailworker/storage/storagetest"
)

// adminGet sends GET path to base with an optional bearer token through c
// (nil: a client without cookies that does not follow redirects).
func adminGet(t *testing.T, c *http.Client, base, path, token string) *http.Response {
	t.Helper()
	if c == nil {
		c = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	req, _ := http.NewRequest("GET", base+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// TestAdminHandler: /healthz and /readyz follow the broker, /status reports
// every server, and with an admin token /, /status and /oauth/start refuse
// requests without it, also when it is passed as ?token=.
func TestAdminHandler(t *testing.T) {
	m := imaptest.StartMem(t, imaptest.MemOptions{Users: map[string]string{testUser: testPassword}})
	b := startBroker(t)
	w := openWorker(t, testConfig(t, storagetest.Drivers[0], b.url(), memServer("support", m)), nil)
	defer w.Close()

	open := httptest.NewServer(w.AdminHandler(secret.String{}))
	defer open.Close()
	for _, p := range []string{"/healthz", "/readyz"} {
		if r := adminGet(t, nil, open.URL, p, ""); r.StatusCode != 200 {
			t.Fatalf("%s = %d with the broker up", p, r.StatusCode)
		}
	}
	r := adminGet(t, nil, open.URL, "/status", "")
	var st []ServerStatus
	if err := json.NewDecoder(r.Body).Decode(&st); err != nil || len(st) != 1 || st[0].Server != "support" {
		t.Fatalf("/status = %v, %v", st, err)
	}

	guarded := httptest.NewServer(w.AdminHandler(secret.New("admin-token-1")))
	defer guarded.Close()
	for _, path := range []string{"/", "/status", "/oauth/start?server=support", "/status?token=admin-token-1"} {
		if r := adminGet(t, nil, guarded.URL, path, ""); r.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s without the token = %d; want 401", path, r.StatusCode)
		}
	}
	if r := adminGet(t, nil, guarded.URL, "/status", "wrong-token"); r.StatusCode != http.StatusUnauthorized {
		t.Errorf("/status with a wrong token = %d; want 401", r.StatusCode)
	}
	if r := adminGet(t, nil, guarded.URL, "/status", "admin-token-1"); r.StatusCode != 200 {
		t.Errorf("/status with the token = %d", r.StatusCode)
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		if r := adminGet(t, nil, guarded.URL, p, ""); r.StatusCode != 200 {
			t.Errorf("%s needs no token, got %d", p, r.StatusCode)
		}
	}

	b.stop()
	waitFor(t, 10*time.Second, "the worker to notice the broker is gone", func() bool { return !w.Publisher().Healthy() })
	for _, p := range []string{"/healthz", "/readyz"} {
		if r := adminGet(t, nil, open.URL, p, ""); r.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("%s = %d with the broker down; want 503", p, r.StatusCode)
		}
	}
}

// TestServeAdminGeneratedToken: with no token configured, a loopback
// listener generates one in data_dir (mode 0600, reused on the next start)
// and returns a one-time login link. The link sets an HttpOnly,
// SameSite=Strict cookie and redirects to a URL without the code; it works
// once; the cookie opens /status; ?token= does not.
func TestServeAdminGeneratedToken(t *testing.T) {
	m := imaptest.StartMem(t, imaptest.MemOptions{Users: map[string]string{testUser: testPassword}})
	b := startBroker(t)
	cfg := testConfig(t, storagetest.Drivers[0], b.url(), memServer("support", m))
	cfg.Admin = config.Admin{Listen: "127.0.0.1:0"}
	var logs logBuffer
	w := openWorker(t, cfg, &logs)
	defer w.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	al, err := w.ServeAdmin(ctx, getenv)
	if err != nil {
		t.Fatal(err)
	}
	if al.TokenFile != filepath.Join(cfg.DataDir, AdminTokenFile) || al.LoginURL == "" {
		t.Fatalf("ServeAdmin = %+v", al)
	}
	fi, err := os.Stat(al.TokenFile)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v, %v; want mode 0600", fi, err)
	}
	raw, _ := os.ReadFile(al.TokenFile)
	token := strings.TrimSpace(string(raw))
	if len(token) < 40 {
		t.Fatalf("generated token is %d characters", len(token))
	}
	if !strings.Contains(logs.String(), al.LoginURL) || strings.Contains(logs.String(), token) {
		t.Errorf("the log must show the login link and never the token:\n%s", logs.String())
	}
	if !strings.HasPrefix(al.LoginURL, al.URL+"/login?code=") || strings.Contains(al.LoginURL, token) {
		t.Errorf("login URL %q", al.LoginURL)
	}

	for _, p := range []string{"/status", "/", "/status?token=" + token} {
		if r := adminGet(t, nil, al.URL, p, ""); r.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s without token or cookie = %d; want 401", p, r.StatusCode)
		}
	}
	if r := adminGet(t, nil, al.URL, "/status", token); r.StatusCode != 200 {
		t.Errorf("/status with the generated token as bearer = %d", r.StatusCode)
	}

	// The login response: cookie attributes and a clean redirect.
	path := strings.TrimPrefix(al.LoginURL, al.URL)
	r := adminGet(t, nil, al.URL, path, "")
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/" {
		t.Fatalf("login = %d to %q; want 303 to /", r.StatusCode, r.Header.Get("Location"))
	}
	cookies := r.Cookies()
	if len(cookies) != 1 || !cookies[0].HttpOnly || cookies[0].SameSite != http.SameSiteStrictMode || strings.Contains(cookies[0].Value, token) {
		t.Fatalf("login cookies = %+v", cookies)
	}
	if r := adminGet(t, nil, al.URL, path, ""); r.StatusCode != http.StatusUnauthorized {
		t.Errorf("login link used twice = %d; want 401", r.StatusCode)
	}

	// A browser (cookie jar) with a fresh link from AdminLoginCode, as
	// `mailworker admin-url` prints it.
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar}
	tok, generated, err := AdminToken(cfg, getenv, false)
	if err != nil || !generated || tok.Reveal() != token {
		t.Fatalf("AdminToken = %v, %v", generated, err)
	}
	r = adminGet(t, browser, al.URL, "/login?code="+AdminLoginCode(tok, time.Now()), "")
	if r.StatusCode != 200 || r.Request.URL.RawQuery != "" || r.Request.URL.Path != "/" {
		t.Fatalf("login in a browser ended at %s with %d", r.Request.URL, r.StatusCode)
	}
	if r := adminGet(t, browser, al.URL, "/status", ""); r.StatusCode != 200 {
		t.Errorf("/status with the session cookie = %d", r.StatusCode)
	}
	if r := adminGet(t, nil, al.URL, "/login?code="+AdminLoginCode(secret.New("another-token"), time.Now()), ""); r.StatusCode != http.StatusUnauthorized {
		t.Errorf("login with a code signed by another token = %d", r.StatusCode)
	}
	if r := adminGet(t, nil, al.URL, "/login?code="+AdminLoginCode(tok, time.Now().Add(-LoginCodeTTL-time.Second)), ""); r.StatusCode != http.StatusUnauthorized {
		t.Errorf("login with an expired code = %d", r.StatusCode)
	}

	// A second start reuses the token.
	cancel()
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	waitFor(t, 10*time.Second, "the first listener to close", func() bool {
		_, err := http.Get(al.URL + "/healthz")
		return err != nil
	})
	if _, err := w.ServeAdmin(ctx2, getenv); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.ReadFile(al.TokenFile); string(again) != string(raw) {
		t.Error("a second start replaced the generated token")
	}
}

// TestServeAdminFailures: each way the admin listener cannot start is an
// error from ServeAdmin (which `run` logs and goes on fetching), never a
// silently open listener.
func TestServeAdminFailures(t *testing.T) {
	m := imaptest.StartMem(t, imaptest.MemOptions{Users: map[string]string{testUser: testPassword}})
	b := startBroker(t)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	dir := t.TempDir()
	emptyFile := filepath.Join(dir, "empty")
	os.WriteFile(emptyFile, nil, 0o600)
	for _, c := range []struct {
		name  string
		admin config.Admin
		want  string
	}{
		{"port taken", config.Admin{Listen: taken.Addr().String()}, "address already in use"},
		{"public without token", config.Admin{Listen: "0.0.0.0:0"}, "not a loopback address"},
		{"missing token file", config.Admin{Listen: "127.0.0.1:0", TokenFile: filepath.Join(dir, "missing")}, "admin.token_file"},
		{"empty token file", config.Admin{Listen: "127.0.0.1:0", TokenFile: emptyFile}, "is empty"},
		{"unset token env", config.Admin{Listen: "127.0.0.1:0", TokenEnv: "MW_TEST_UNSET_ADMIN_TOKEN"}, "MW_TEST_UNSET_ADMIN_TOKEN"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := testConfig(t, storagetest.Drivers[0], b.url(), memServer("support", m))
			cfg.Admin = c.admin
			w := openWorker(t, cfg, nil)
			defer w.Close()
			al, err := w.ServeAdmin(context.Background(), getenv)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("ServeAdmin = %+v, %v; want an error containing %q", al, err, c.want)
			}
		})
	}
}

// TestRunWithoutAdminSection runs the binary with a configuration that has
// no admin section (as the README's minimal one): it keeps running and
// fetching, logs a one-time link that opens /status through a cookie, and
// a second `run` whose admin port is taken logs an error and still fetches.
func TestRunWithoutAdminSection(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildBinary(t)
	m := imaptest.StartMem(t, imaptest.MemOptions{Users: map[string]string{testUser: testPassword, "bob": testPassword}})
	m.Append(t, testUser, "INBOX", mail("a@example.org", "Hello", ""))
	b := startBroker(t)
	// writeConfig writes a configuration without an admin section, with
	// its own data_dir, fetching user's mailbox as server name.
	writeConfig := func(name, user string) string {
		dir := t.TempDir()
		cfgFile := filepath.Join(dir, "mailworker.yaml")
		err := os.WriteFile(cfgFile, []byte(fmt.Sprintf(`data_dir: %s
nats: {url: %s}
servers:
  - name: %s
    protocol: imaps
    host: 127.0.0.1
    port: %d
    tls: {ca_file: %s}
    username: %s
    auth: {method: password, password_env: %s}
    fetch_interval: 10s
`, filepath.Join(dir, "data"), b.url(), name, m.Port(), m.CAFile(), user, passwordEnv)), 0o600)
		if err != nil {
			t.Fatal(err)
		}
		return cfgFile
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	adminAddr := ln.Addr().String()
	ln.Close()

	start := func(cfgFile, adminListen string) (*exec.Cmd, *logBuffer) {
		cmd := exec.Command(bin, "run", "--config", cfgFile)
		cmd.Env = append(os.Environ(), passwordEnv+"="+testPassword, "MAILWORKER_ADMIN_LISTEN="+adminListen)
		var out logBuffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cmd.Process.Signal(syscall.SIGTERM)
			cmd.Wait()
		})
		return cmd, &out
	}
	_, out := start(writeConfig("support", testUser), adminAddr)
	waitFor(t, 60*time.Second, "the message", func() bool { return b.count(t) == 1 })
	linkRE := regexp.MustCompile(`http://[0-9.:]+/login\?code=[A-Za-z0-9._-]+`)
	waitFor(t, 30*time.Second, "the admin link in the log", func() bool { return linkRE.MatchString(out.String()) })
	link := linkRE.FindString(out.String())

	if r := adminGet(t, nil, "http://"+adminAddr, "/status", ""); r.StatusCode != http.StatusUnauthorized {
		t.Errorf("/status without token or cookie = %d; want 401", r.StatusCode)
	}
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar}
	if r := adminGet(t, browser, link, "", ""); r.StatusCode != 200 || r.Request.URL.RawQuery != "" {
		t.Fatalf("opening the link ended at %s with %d", r.Request.URL, r.StatusCode)
	}
	r := adminGet(t, browser, "http://"+adminAddr, "/status", "")
	var st []ServerStatus
	if err := json.NewDecoder(r.Body).Decode(&st); err != nil || len(st) != 1 || st[0].Run == nil {
		t.Fatalf("/status through the cookie = %d %+v, %v", r.StatusCode, st, err)
	}

	// A second worker (own data_dir, another mailbox, same broker) whose
	// admin port is taken by the first logs the failure and fetches anyway.
	m.Append(t, "bob", "INBOX", mail("b@example.org", "Second", ""))
	cmd2, out2 := start(writeConfig("bob", "bob"), adminAddr)
	waitFor(t, 60*time.Second, "the second message", func() bool { return b.count(t) == 2 })
	waitFor(t, 30*time.Second, "the admin error", func() bool { return strings.Contains(out2.String(), "admin listener not started") })
	if cmd2.ProcessState != nil {
		t.Fatalf("the second run exited:\n%s", out2.String())
	}
	if strings.Contains(out.String()+out2.String(), testPassword) {
		t.Fatal("the password appears in the logs")
	}
}

// TestAdminOAuthFlow walks the browser side on the running worker's admin
// listener against oauthtest (PKCE required): a logged-in browser
// authorizes a server through /, /oauth/start and the callback; another
// browser's callback is refused and stores nothing (login CSRF). Then the
// client_id changes: GET /status reports settings_changed and keeps the
// row; a fetch of the worker of `run` (DeleteChangedTokens) deletes it,
// logging the setting's name only.
func TestAdminOAuthFlow(t *testing.T) {
	idp := oauthtest.Start(t, oauthtest.Options{Username: testUser, RequirePKCE: true})
	b := startBroker(t)
	const secretEnv = "MW_TEST_CLIENT_SECRET"
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := closed.Addr().(*net.TCPAddr).Port
	closed.Close()
	srv := config.Server{
		Name: "box", Protocol: config.ProtocolIMAPS, Host: "127.0.0.1", Port: closedPort, Username: testUser,
		FetchInterval: config.Duration(time.Hour),
		Auth: config.Auth{Method: config.AuthOAuth2, OAuth: config.OAuth{
			Provider: config.ProviderCustom, Flow: config.FlowAuthorizationCode,
			ClientID: idp.ClientID, ClientSecretEnv: secretEnv,
			AuthURL: idp.AuthURL(), TokenURL: idp.TokenURL(), Scopes: []string{"mail"},
		}},
	}
	srv.SetDefaults()
	cfg := testConfig(t, storagetest.Drivers[0], b.url(), srv)
	cfg.Admin = config.Admin{Listen: "127.0.0.1:0"}
	var logs logBuffer
	f, err := logging.New(logging.Options{Writer: &logs, Format: "json"})
	if err != nil {
		t.Fatal(err)
	}
	env := func(k string) string {
		switch k {
		case secretEnv:
			return idp.ClientSecret
		case "MAILWORKER_SECRET_KEY":
			return strings.Repeat("ab", 32)
		}
		return ""
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w, err := Open(ctx, Options{Config: cfg, Logs: f, Getenv: env, DeleteChangedTokens: true})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	al, err := w.ServeAdmin(ctx, env)
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := AdminToken(cfg, env, false)
	if err != nil {
		t.Fatal(err)
	}
	// login returns a logged-in browser that stops at the provider's
	// redirect to the callback.
	login := func() (*http.Client, *string) {
		jar, _ := cookiejar.New(nil)
		callback := new(string)
		c := &http.Client{Jar: jar, CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if req.URL.Path == "/oauth/callback" {
				*callback = req.URL.String()
				return http.ErrUseLastResponse
			}
			return nil
		}}
		if r := adminGet(t, c, al.URL, "/login?code="+AdminLoginCode(tok, time.Now()), ""); r.StatusCode != 200 {
			t.Fatalf("login = %d", r.StatusCode)
		}
		return c, callback
	}
	rows := func() int {
		var n int
		if err := w.DB().Get(&n, `SELECT COUNT(*) FROM oauth_tokens WHERE server = 'box'`); err != nil {
			t.Fatal(err)
		}
		return n
	}

	if r := adminGet(t, nil, al.URL, "/oauth/start?server=box", ""); r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("/oauth/start without login = %d", r.StatusCode)
	}
	admin, adminCallback := login()
	r := adminGet(t, admin, al.URL, "/", "")
	page, _ := io.ReadAll(r.Body)
	if !strings.Contains(string(page), `href="/oauth/start?server=box"`) {
		t.Fatalf("index page lacks the authorize link:\n%s", page)
	}

	// Login CSRF: the attacker's consent, completed in the admin's browser.
	attacker, attackerCallback := login()
	adminGet(t, attacker, al.URL, "/oauth/start?server=box", "")
	if *attackerCallback == "" {
		t.Fatal("no redirect to the callback")
	}
	r = adminGet(t, admin, *attackerCallback, "", "")
	body, _ := io.ReadAll(r.Body)
	if r.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "started in another browser") {
		t.Fatalf("cross-browser callback = %d %s", r.StatusCode, body)
	}
	if idp.Counts().AuthorizationCode != 0 || rows() != 0 {
		t.Fatal("a cross-browser callback exchanged its code or stored a token")
	}

	// The admin's own flow.
	adminGet(t, admin, al.URL, "/oauth/start?server=box", "")
	r = adminGet(t, admin, *adminCallback, "", "")
	body, _ = io.ReadAll(r.Body)
	if r.StatusCode != 200 || !strings.Contains(string(body), "is authorized") || rows() != 1 {
		t.Fatalf("callback = %d %s, %d rows", r.StatusCode, body, rows())
	}
	if c := idp.Counts(); c.PKCEVerified != 1 {
		t.Fatalf("counts %+v; want PKCE verified", c)
	}

	// client_id changes. A worker that is not `run` (its own data_dir, the
	// same database) reports it on GET /status and keeps the row.
	next := *cfg
	next.Servers = []config.Server{srv}
	next.Servers[0].Auth.OAuth.ClientID = "another-client"
	other := next
	other.DataDir = t.TempDir()
	other.Admin = config.Admin{Listen: "off"}
	w2, err := Open(ctx, Options{Config: &other, Logs: f, Getenv: env})
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Close()
	h2 := httptest.NewServer(w2.AdminHandler(tok))
	defer h2.Close()
	r = adminGet(t, nil, h2.URL, "/status", tok.Reveal())
	var st []ServerStatus
	if err := json.NewDecoder(r.Body).Decode(&st); err != nil || len(st) != 1 || st[0].Token == nil {
		t.Fatalf("/status = %+v, %v", st, err)
	}
	if ts := st[0].Token; ts.State != "settings_changed" || len(ts.Changed) != 1 || ts.Changed[0] != "client_id" || rows() != 1 {
		t.Fatalf("/status token = %+v, %d rows; want settings_changed naming client_id, row kept", ts, rows())
	}
	if err := w2.RunOnce(ctx); err == nil || rows() != 1 {
		t.Fatalf("a fetch outside run: %v, %d rows; want an error and the row kept", err, rows())
	}

	// The worker of `run` reloads the change; the server's first run
	// deletes the token and logs it.
	if _, err := w.Reload(&next); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "run to delete the token", func() bool { return rows() == 0 })
	waitFor(t, 10*time.Second, "the deletion log", func() bool { return strings.Contains(logs.String(), `"changed":"client_id"`) })
	out := logs.String()
	if !strings.Contains(out, `"changed":"client_id"`) || !strings.Contains(out, `"account":"box"`) || strings.Contains(out, "another-client") {
		t.Fatalf("run's deletion log must name the server and client_id, not the value:\n%s", out)
	}
}

// TestLoginCodeFromBeforeARestart: a code issued before the listener
// started is refused (it may have been used with the previous process),
// one issued since works once.
func TestLoginCodeFromBeforeARestart(t *testing.T) {
	tok := secret.New("restart-token")
	a := newAdminAuth(tok, "c", nil)
	now := time.Now()
	a.now = func() time.Time { return now }
	login := func(code string) int {
		rec := httptest.NewRecorder()
		a.login(rec, httptest.NewRequest("GET", "/login?code="+code, nil))
		return rec.Code
	}
	if c := login(AdminLoginCode(tok, a.started.Add(-2*time.Second))); c != http.StatusUnauthorized {
		t.Errorf("code issued before the start: %d; want 401", c)
	}
	code := AdminLoginCode(tok, now)
	if c := login(code); c != http.StatusSeeOther {
		t.Errorf("fresh code: %d; want 303", c)
	}
	if c := login(code); c != http.StatusUnauthorized {
		t.Errorf("fresh code again: %d; want 401", c)
	}
}
