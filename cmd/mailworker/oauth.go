package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"golang.org/x/oauth2"

	"github.com/mailworker/mailworker/config"
	"github.com/mailworker/mailworker/oauth"
	"github.com/mailworker/mailworker/secret"
	"github.com/mailworker/mailworker/storage"
)

func init() {
	register(&command{
		name:    "oauth",
		usage:   "authorize|set-token|status|revoke [--server NAME]",
		summary: "authorize, inspect and revoke OAuth 2.0 tokens of mail servers",
		run:     runOAuth,
	})
}

// authorizeTimeout bounds how long `oauth authorize` waits for the browser.
const authorizeTimeout = 10 * time.Minute

const oauthUsage = `usage: mailworker oauth SUBCOMMAND --server NAME [--config FILE]

  authorize   open the provider's consent page and store the resulting token
              (authorization_code, pkce); with a loopback redirect_url the
              redirect is received here, otherwise paste the code or the
              whole redirect URL. client_credentials: fetch a token to test.
  set-token   read {"access_token","refresh_token","expiry"} JSON on stdin
  status      show token state of one or every oauth2 server (no secrets);
              exit status 1 when a server needs authorization
  revoke      delete the stored token and revoke it at the provider
`

func runOAuth(env *cliEnv, args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(env.stderr, oauthUsage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	sub := args[0]
	fs := flag.NewFlagSet("oauth "+sub, flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	cfgPath := configFlag(fs)
	name := fs.String("server", "", "configured server `NAME`")
	timeout := fs.Duration("timeout", authorizeTimeout, "authorize: how long to wait for the browser")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	switch sub {
	case "authorize", "set-token", "revoke":
		if *name == "" {
			fmt.Fprintf(env.stderr, "mailworker oauth %s: --server is required\n", sub)
			return 2
		}
	case "status":
	default:
		fmt.Fprintf(env.stderr, "mailworker oauth: unknown subcommand %q\n\n%s", sub, oauthUsage)
		return 2
	}

	cfg, err := loadConfig(env, *cfgPath)
	if err != nil {
		fmt.Fprintf(env.stderr, "mailworker oauth %s: %v\n", sub, err)
		return 1
	}
	var srv config.Server
	if *name != "" {
		var ok bool
		if srv, ok = findServer(cfg, *name); !ok {
			fmt.Fprintf(env.stderr, "mailworker oauth %s: no server named %q in %s\n", sub, *name, cfg.Path)
			return 1
		}
		if srv.Auth.Method != config.AuthOAuth2 {
			fmt.Fprintf(env.stderr, "mailworker oauth %s: server %s uses auth method %q, not oauth2\n", sub, srv.Name, srv.Auth.Method)
			return 1
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	logger := slog.New(slog.NewTextHandler(env.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	m, closeDB, err := openOAuth(ctx, env, cfg, logger)
	if err != nil {
		fmt.Fprintf(env.stderr, "mailworker oauth %s: %v\n", sub, err)
		return 1
	}
	defer closeDB()
	m.SetServers(cfg.Servers)

	switch sub {
	case "authorize":
		err = oauthAuthorize(ctx, env, m, srv, *timeout)
	case "set-token":
		err = oauthSetToken(ctx, env, m, srv)
	case "revoke":
		if err = m.Revoke(ctx, srv); err == nil {
			fmt.Fprintf(env.stdout, "server %s: token deleted and revoked where the provider supports it\n", srv.Name)
		}
	case "status":
		srvs := cfg.Servers
		if *name != "" {
			srvs = []config.Server{srv}
		}
		var attention bool
		attention, err = oauthStatus(ctx, env, m, srvs)
		if err == nil && attention {
			return 1
		}
	}
	if err != nil {
		fmt.Fprintf(env.stderr, "mailworker oauth %s: %v\n", sub, err)
		return 1
	}
	return 0
}

func findServer(cfg *config.Config, name string) (config.Server, bool) {
	for _, s := range cfg.Servers {
		if s.Name == name {
			return s, true
		}
	}
	return config.Server{}, false
}

// openOAuth opens the database and the at-rest key and builds a Manager.
func openOAuth(ctx context.Context, env *cliEnv, cfg *config.Config, logger *slog.Logger) (*oauth.Manager, func(), error) {
	box, err := secret.LoadKey(cfg.DataDir, cfg.Secrets.KeyFile, env.getenv, logger)
	if err != nil {
		return nil, nil, err
	}
	db, err := storage.Open(ctx, cfg.Database, cfg.DataDir)
	if err != nil {
		return nil, nil, err
	}
	m := oauth.New(db, box, logger, nil)
	m.SetGetenv(env.getenv)
	return m, func() {
		if err := db.Close(); err != nil {
			logger.Warn("close database", "err", err)
		}
	}, nil
}

// oauthAuthorize runs the authorization code / PKCE flow from a terminal.
func oauthAuthorize(ctx context.Context, env *cliEnv, m *oauth.Manager, srv config.Server, timeout time.Duration) error {
	s, err := m.Resolve(srv)
	if err != nil {
		return err
	}
	switch s.Flow {
	case config.FlowClientCredentials:
		// Nothing to consent to interactively; prove the app registration works.
		if _, err := m.Credentials(srv).AccessToken(ctx, true); err != nil {
			return err
		}
		fmt.Fprintf(env.stdout, "server %s: client credentials work (app-only; tokens are fetched on demand, nothing stored)\n", srv.Name)
		return nil
	case config.FlowManual:
		return fmt.Errorf("server %s uses flow manual: use `mailworker oauth set-token --server %s`", srv.Name, srv.Name)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	redirect := s.RedirectURL
	if redirect == "" {
		redirect = oauth.DefaultRedirectURL
	}
	results := make(chan authResponse, 2)
	var ln net.Listener
	if u, err := url.Parse(redirect); err == nil && u.Scheme == "http" && isLoopback(u.Hostname()) {
		host := u.Hostname()
		port := u.Port()
		if port == "" {
			port = "0"
		}
		if ln, err = net.Listen("tcp", net.JoinHostPort(host, port)); err != nil {
			return fmt.Errorf("listen for the redirect on %s: %w", redirect, err)
		}
		u.Host = net.JoinHostPort(host, fmt.Sprint(ln.Addr().(*net.TCPAddr).Port))
		redirect = u.String()
		path := u.Path
		if path == "" {
			path = "/"
		}
		a, err := m.StartAuthorization(ctx, srv, redirect)
		if err != nil {
			ln.Close()
			return err
		}
		// The browser starts at a local, unguessable, single-use page that
		// sets the cookie binding the state to it, then goes on to the
		// provider; the redirect back must carry that cookie.
		startURL := *u
		startURL.Path, startURL.RawQuery = "/mailworker-authorize/"+rand.Text(), ""
		var opened atomic.Bool
		done := make(chan error, 1)
		hs := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case startURL.Path:
				if !opened.CompareAndSwap(false, true) {
					http.Error(w, "mailworker: this authorization link was already opened; run `mailworker oauth authorize` again", http.StatusConflict)
					return
				}
				oauth.SetBindingCookie(w, a, false)
				w.Header().Set("Cache-Control", "no-store")
				http.Redirect(w, r, a.URL, http.StatusFound)
				return
			case path:
			default:
				http.NotFound(w, r)
				return
			}
			binding, clear := oauth.BindingFromRequest(r)
			clear(w)
			select {
			case results <- authResponse{q: r.URL.Query(), binding: binding}:
			default:
				http.Error(w, "already received an answer", http.StatusConflict)
				return
			}
			if err := <-done; err != nil {
				http.Error(w, "mailworker: authorization failed: "+err.Error(), http.StatusBadRequest)
				return
			}
			fmt.Fprintf(w, "mailworker: server %s is authorized. You can close this window.\n", srv.Name)
		})}
		go hs.Serve(ln)
		defer func() {
			sctx, c := context.WithTimeout(context.Background(), 5*time.Second)
			defer c()
			hs.Shutdown(sctx)
		}()
		defer func() {
			// Unblock a browser request waiting for the outcome.
			select {
			case done <- ctx.Err():
			default:
			}
		}()
		printAuthURL(env.stdout, srv.Name, startURL.String())
		fmt.Fprintf(env.stdout, "Waiting for the redirect to %s\n", redirect)
		fmt.Fprintf(env.stdout, "If the browser runs on another machine, open this URL there instead, approve, and paste the\naddress the browser is sent back to (or the code) here and press Enter:\n\n%s\n\n", a.URL)
		go readPasted(env.stdin, results, a.Binding)
		resp, err := await(ctx, results, a.State)
		if err != nil {
			return err
		}
		_, err = m.Callback(ctx, resp.q, resp.binding)
		done <- err
		if err != nil {
			return err
		}
		fmt.Fprintf(env.stdout, "server %s: authorized; token stored\n", srv.Name)
		return nil
	}

	// The redirect goes elsewhere: the administrator pastes it here, so
	// this process, which holds the binding, is what the state is bound to.
	a, err := m.StartAuthorization(ctx, srv, redirect)
	if err != nil {
		return err
	}
	printAuthURL(env.stdout, srv.Name, a.URL)
	fmt.Fprintf(env.stdout, "After approving, the browser goes to %s.\nPaste the code or the full redirect URL here and press Enter:\n", redirect)
	go readPasted(env.stdin, results, a.Binding)
	resp, err := await(ctx, results, a.State)
	if err != nil {
		return err
	}
	if _, err := m.Callback(ctx, resp.q, resp.binding); err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "server %s: authorized; token stored\n", srv.Name)
	return nil
}

// authResponse is an authorization response and the binding it came with
// (the browser's cookie, or this process's own for a pasted one).
type authResponse struct {
	q       url.Values
	binding string
}

func printAuthURL(w io.Writer, name, u string) {
	fmt.Fprintf(w, "Open this URL in a browser and approve mail access for server %s:\n\n%s\n\n", name, u)
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// readPasted reads one pasted line: a code, a query string or a full
// redirect URL. EOF sends nothing (the loopback redirect may still come).
// A pasted response is bound to this process: it carries binding.
func readPasted(r io.Reader, out chan<- authResponse, binding string) {
	// A read error (EOF, closed stdin) or an empty line: keep waiting
	// for the redirect; ReadString returns what it read either way.
	line, _ := bufio.NewReader(r).ReadString('\n')
	line = strings.TrimSpace(line)
	if line == "" {
		return
	}
	q := url.Values{}
	if i := strings.IndexByte(line, '?'); i >= 0 {
		line = line[i+1:]
	}
	if strings.Contains(line, "code=") || strings.Contains(line, "error=") {
		if v, err := url.ParseQuery(line); err == nil {
			q = v
		}
	} else {
		q.Set("code", line)
	}
	select {
	case out <- authResponse{q: q, binding: binding}:
	default:
	}
}

// await waits for the redirect's parameters; a pasted bare code gets the
// state this run issued.
func await(ctx context.Context, results <-chan authResponse, state string) (authResponse, error) {
	select {
	case r := <-results:
		if r.q.Get("state") == "" {
			r.q.Set("state", state)
		}
		return r, nil
	case <-ctx.Done():
		return authResponse{}, fmt.Errorf("waiting for the authorization: %w", ctx.Err())
	}
}

// pastedToken is the JSON `oauth set-token` reads.
type pastedToken struct {
	AccessToken  string    `json:"access_token"`
	RefreshToken string    `json:"refresh_token"`
	TokenType    string    `json:"token_type"`
	Expiry       time.Time `json:"expiry"`
	ExpiresIn    int64     `json:"expires_in"`
}

func oauthSetToken(ctx context.Context, env *cliEnv, m *oauth.Manager, srv config.Server) error {
	var p pastedToken
	dec := json.NewDecoder(io.LimitReader(env.stdin, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			// The syntax error text can quote input; keep only the offset.
			return fmt.Errorf("read token JSON on stdin: syntax error at byte %d", se.Offset)
		}
		// Other decode errors name fields and types, never values.
		return fmt.Errorf("read token JSON on stdin (want {\"access_token\",\"refresh_token\",\"expiry\"}): %w", err)
	}
	tok := &oauth2.Token{AccessToken: p.AccessToken, RefreshToken: p.RefreshToken, TokenType: p.TokenType, Expiry: p.Expiry}
	if tok.Expiry.IsZero() && p.ExpiresIn > 0 {
		tok.Expiry = time.Now().Add(time.Duration(p.ExpiresIn) * time.Second)
	}
	if err := m.SetToken(ctx, srv, tok); err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "server %s: token stored (refresh token: %v)\n", srv.Name, tok.RefreshToken != "")
	return nil
}

// oauthStatus prints a table; attention reports servers needing action.
func oauthStatus(ctx context.Context, env *cliEnv, m *oauth.Manager, srvs []config.Server) (attention bool, err error) {
	sts, err := m.Status(ctx, srvs)
	if err != nil {
		return false, err
	}
	if len(sts) == 0 {
		fmt.Fprintln(env.stdout, "no server uses auth method oauth2")
		return false, nil
	}
	tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVER\tPROVIDER\tFLOW\tSTATE\tEXPIRY\tLAST REFRESH\tREFRESH TOKEN\tLAST ERROR")
	for _, s := range sts {
		state := s.State
		if state == oauth.StateSettingsChanged {
			state += ": re-authorize"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Server, s.Provider, s.Flow, state,
			fmtTime(s.Expiry), fmtTime(s.LastRefresh), yesNo(s.RefreshToken), s.LastError)
		switch s.State {
		case oauth.StateMissing, oauth.StateNeedsReauth, oauth.StateExpired, oauth.StateSettingsChanged:
			attention = true
		}
	}
	return attention, tw.Flush()
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
