package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailworker/mailworker/config"
	"github.com/mailworker/mailworker/oauth"
	"github.com/mailworker/mailworker/oauth/oauthtest"
	"github.com/mailworker/mailworker/storage"
	"github.com/mailworker/mailworker/worker"
)

// oauthCLI is a config file with one server per flow against an oauthtest
// server, and an environment with the at-rest key.
type oauthCLI struct {
	t    *testing.T
	idp  *oauthtest.Server
	cfg  string
	key  string
	logs bytes.Buffer // every verb's stderr
	mu   sync.Mutex
}

func newOAuthCLI(t *testing.T) *oauthCLI {
	dir := t.TempDir()
	idp := oauthtest.Start(t, oauthtest.Options{})
	secretFile := filepath.Join(dir, "client.secret")
	if err := os.WriteFile(secretFile, []byte(idp.ClientSecret), 0o600); err != nil {
		t.Fatal(err)
	}
	server := func(name, flow, extra string) string {
		return fmt.Sprintf(`
  - name: %s
    protocol: imaps
    host: 127.0.0.1
    username: %s@example.test
    auth:
      method: oauth2
      oauth:
        provider: custom
        flow: %s
        client_id: %s
        client_secret_file: %s
        auth_url: %s
        token_url: %s
        revoke_url: %s
        scopes: [mail]
%s`, name, name, flow, idp.ClientID, secretFile, idp.AuthURL(), idp.TokenURL(), idp.RevokeURL(), extra)
	}
	cfg := "data_dir: " + filepath.Join(dir, "data") + "\nservers:" +
		server("loop", "pkce", "        redirect_url: http://127.0.0.1/callback\n") +
		server("paste", "authorization_code", "        redirect_url: https://helpdesk.example.test/oauth/callback\n") +
		server("manual", "manual", "") +
		server("app", "client_credentials", "")
	path := filepath.Join(dir, "mailworker.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	c := &oauthCLI{t: t, idp: idp, cfg: path, key: hex.EncodeToString(bytes.Repeat([]byte{5}, 32))}
	t.Cleanup(func() {
		for _, sec := range idp.Issued() {
			if strings.Contains(c.logs.String(), sec) {
				t.Errorf("CLI output contains issued secret %.8s...", sec)
			}
		}
	})
	return c
}

// run runs `mailworker oauth ARGS` with stdin and returns stdout and the
// exit status; stdout is also streamed to lines when it is not nil.
func (c *oauthCLI) run(stdin io.Reader, lines chan<- string, args ...string) (string, int) {
	var out bytes.Buffer
	var w io.Writer = &out
	var pw *io.PipeWriter
	if lines != nil {
		var pr *io.PipeReader
		pr, pw = io.Pipe()
		w = io.MultiWriter(&out, pw)
		go func() {
			sc := bufio.NewScanner(pr)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
	}
	var errOut bytes.Buffer
	env := &cliEnv{stdin: stdin, stdout: w, stderr: &errOut, getenv: func(k string) string {
		if k == "MAILWORKER_SECRET_KEY" {
			return c.key
		}
		return ""
	}}
	code := runCLI(env, append([]string{"oauth"}, append(args, "--config", c.cfg)...))
	if pw != nil {
		pw.Close()
	}
	c.mu.Lock()
	c.logs.Write(out.Bytes())
	c.logs.Write(errOut.Bytes())
	c.mu.Unlock()
	if code != 0 {
		c.t.Logf("mailworker oauth %v: exit %d\nstdout: %s\nstderr: %s", args, code, out.String(), errOut.String())
	}
	return out.String(), code
}

func TestOAuthCLIAuthorizeLoopback(t *testing.T) {
	c := newOAuthCLI(t)
	lines := make(chan string, 16)
	done := make(chan int, 1)
	// stdin never delivers: the browser's redirect must complete the flow.
	pr, pw := io.Pipe()
	defer pw.Close()
	go func() {
		_, code := c.run(pr, lines, "authorize", "--server", "loop", "--timeout", "1m")
		done <- code
	}()
	// The local start page (sets the binding cookie), then the provider's
	// URL for a browser on another machine.
	var startURL, authURL string
	for l := range lines {
		if strings.HasPrefix(l, "http://127.0.0.1:") && strings.Contains(l, "/mailworker-authorize/") {
			startURL = l
		}
		if strings.HasPrefix(l, c.idp.AuthURL()) {
			authURL = l
			break
		}
	}
	if startURL == "" || authURL == "" {
		t.Fatalf("authorize printed start %q, provider %q", startURL, authURL)
	}
	if !strings.Contains(authURL, "code_challenge_method=S256") {
		t.Fatalf("pkce URL without S256 challenge: %s", authURL)
	}
	// The "browser" (cookie jar): start page, provider, loopback listener.
	// The start page works once: a second visitor gets 409.
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := browser.Get(startURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	provider := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusFound || !strings.HasPrefix(provider, c.idp.AuthURL()) {
		t.Fatalf("start page: %s to %q", resp.Status, provider)
	}
	if resp, err := http.Get(startURL); err != nil || resp.StatusCode != http.StatusConflict {
		t.Fatalf("start page opened twice: %v %v", resp, err)
	}
	browser.CheckRedirect = nil
	resp, err = browser.Get(provider)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "authorized") {
		t.Fatalf("redirect answered %s: %s", resp.Status, body)
	}
	go func() {
		for range lines {
		}
	}()
	if code := <-done; code != 0 {
		t.Fatalf("authorize exit %d", code)
	}
	if n := c.idp.Counts().PKCEVerified; n != 1 {
		t.Fatalf("PKCE verified %d times; want 1", n)
	}
	out, code := c.run(strings.NewReader(""), nil, "status", "--server", "loop")
	if code != 0 || !strings.Contains(out, "valid") {
		t.Fatalf("status after authorize (exit %d):\n%s", code, out)
	}
}

func TestOAuthCLIAuthorizePaste(t *testing.T) {
	c := newOAuthCLI(t)
	lines := make(chan string, 16)
	pr, pw := io.Pipe()
	done := make(chan int, 1)
	go func() {
		_, code := c.run(pr, lines, "authorize", "--server", "paste", "--timeout", "1m")
		done <- code
	}()
	var authURL string
	for l := range lines {
		if strings.HasPrefix(l, c.idp.AuthURL()) {
			authURL = l
			break
		}
	}
	go func() {
		for range lines {
		}
	}()
	// The redirect goes to a host that does not exist here: capture it and
	// paste it, as an administrator copies it from the address bar.
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Get(authURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if !strings.HasPrefix(loc, "https://helpdesk.example.test/oauth/callback?") {
		t.Fatalf("redirect to %q", loc)
	}
	fmt.Fprintln(pw, loc)
	if code := <-done; code != 0 {
		t.Fatalf("authorize exit %d", code)
	}
	// authorization_code with a client secret uses PKCE as well.
	if n := c.idp.Counts().PKCEVerified; !strings.Contains(authURL, "code_challenge_method=S256") || n != 1 {
		t.Fatalf("PKCE verified %d times, URL %s", n, authURL)
	}
	if out, code := c.run(strings.NewReader(""), nil, "status", "--server", "paste"); code != 0 || !strings.Contains(out, "valid") {
		t.Fatalf("status (exit %d):\n%s", code, out)
	}
}

func TestOAuthCLISetTokenStatusRevoke(t *testing.T) {
	c := newOAuthCLI(t)
	at, rt := c.idp.IssueGrant("manual@example.test")
	js := fmt.Sprintf(`{"access_token":%q,"refresh_token":%q,"expiry":%q}`, at, rt, time.Now().Add(time.Hour).Format(time.RFC3339))
	if _, code := c.run(strings.NewReader(js), nil, "set-token", "--server", "manual"); code != 0 {
		t.Fatalf("set-token exit %d", code)
	}
	if _, code := c.run(strings.NewReader("{not json"), nil, "set-token", "--server", "manual"); code == 0 {
		t.Fatal("set-token accepted invalid JSON")
	}
	out, code := c.run(strings.NewReader(""), nil, "status")
	// loop and paste are not authorized: exit 1, and every server listed.
	if code != 1 {
		t.Fatalf("status exit %d, want 1 (servers need authorization)", code)
	}
	for _, want := range []string{"manual", "valid", "loop", "missing", "app", "on_demand"} {
		if !strings.Contains(out, want) {
			t.Fatalf("status output lacks %q:\n%s", want, out)
		}
	}
	if _, code := c.run(strings.NewReader(""), nil, "revoke", "--server", "manual"); code != 0 {
		t.Fatalf("revoke exit %d", code)
	}
	if c.idp.RefreshTokenValid(rt) {
		t.Fatal("revoke did not revoke the refresh token at the provider")
	}
	out, _ = c.run(strings.NewReader(""), nil, "status", "--server", "manual")
	if !strings.Contains(out, "missing") {
		t.Fatalf("status after revoke:\n%s", out)
	}
	if _, code := c.run(strings.NewReader(""), nil, "authorize", "--server", "app"); code != 0 {
		t.Fatalf("authorize of client credentials server: exit %d", code)
	}
	if _, code := c.run(strings.NewReader(""), nil, "authorize"); code != 2 {
		t.Fatalf("authorize without --server: exit %d, want 2", code)
	}
}

// TestStatusKeepsTokenWhenSettingsChange: `mailworker status` and
// `mailworker oauth status` run with a changed client_id report the stored
// token as settings_changed (naming client_id) and leave its row in place;
// only `oauth revoke` deletes it.
func TestStatusKeepsTokenWhenSettingsChange(t *testing.T) {
	c := newOAuthCLI(t)
	at, rt := c.idp.IssueGrant("manual@example.test")
	js := fmt.Sprintf(`{"access_token":%q,"refresh_token":%q,"expiry":%q}`, at, rt, time.Now().Add(time.Hour).Format(time.RFC3339))
	if _, code := c.run(strings.NewReader(js), nil, "set-token", "--server", "paste"); code != 0 {
		t.Fatalf("set-token exit %d", code)
	}
	orig, err := os.ReadFile(c.cfg)
	if err != nil {
		t.Fatal(err)
	}
	changed := strings.ReplaceAll(string(orig), "client_id: "+c.idp.ClientID, "client_id: another-client")
	if changed == string(orig) {
		t.Fatal("client_id not found in the test config")
	}
	if err := os.WriteFile(c.cfg, []byte(changed), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(c.cfg)
	if err != nil {
		t.Fatal(err)
	}
	rows := func() int {
		t.Helper()
		db, err := storage.Open(context.Background(), cfg.Database, cfg.DataDir)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		var n int
		if err := db.Get(&n, `SELECT COUNT(*) FROM oauth_tokens WHERE server = 'paste'`); err != nil {
			t.Fatal(err)
		}
		return n
	}
	env := map[string]string{"MAILWORKER_SECRET_KEY": c.key}

	code, out, errOut := cli(t, env, "status", "--json", "--config", c.cfg)
	if code != 0 {
		t.Fatalf("status: exit %d\n%s%s", code, out, errOut)
	}
	var sts []worker.ServerStatus
	if err := json.Unmarshal([]byte(out), &sts); err != nil {
		t.Fatal(err)
	}
	var paste *worker.TokenStatus
	for _, s := range sts {
		if s.Server == "paste" {
			paste = s.Token
		}
	}
	if paste == nil || paste.State != oauth.StateSettingsChanged || len(paste.Changed) != 1 || paste.Changed[0] != "client_id" {
		t.Fatalf("status of paste = %+v; want settings_changed naming client_id\n%s", paste, out)
	}
	if n := rows(); n != 1 {
		t.Fatalf("status deleted the token: %d rows", n)
	}
	code, out, _ = cli(t, env, "status", "--config", c.cfg)
	if code != 0 || !strings.Contains(out, "settings_changed: re-authorize") {
		t.Fatalf("status table: exit %d\n%s", code, out)
	}

	out, code = c.run(strings.NewReader(""), nil, "status", "--server", "paste")
	if code != 1 || !strings.Contains(out, "settings_changed: re-authorize") || rows() != 1 {
		t.Fatalf("oauth status: exit %d, %d rows\n%s", code, rows(), out)
	}
	if strings.Contains(out, "another-client") {
		t.Fatalf("oauth status shows the setting's value:\n%s", out)
	}
	// The provider refuses the revocation (another client_id now), but
	// the local token is deleted all the same.
	c.run(strings.NewReader(""), nil, "revoke", "--server", "paste")
	if n := rows(); n != 0 {
		t.Fatalf("revoke left %d rows", n)
	}
}
