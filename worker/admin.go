package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/mailworker/mailworker/config"
	"github.com/mailworker/mailworker/secret"
)

// AdminHandler serves the admin HTTP API:
//
//	GET /healthz              200 when NATS is connected, 503 otherwise (no token)
//	GET /readyz               200 when NATS and the database answer, 503 otherwise (no token)
//	GET /login?code=CODE      one-time login link: sets the session cookie, redirects to /
//	GET /                     a page linking to /status and each server's authorization
//	GET /status               per-server run state and token state (JSON)
//	GET /oauth/start?server=N starts an authorization code flow
//	GET /oauth/callback       the provider's redirect
//
// /, /status and /oauth/start need the token: an Authorization: Bearer
// header, or the session cookie set by /login (HttpOnly, SameSite=Strict,
// valid SessionTTL). A token in the query string is not accepted. The
// callback is protected by its single-use state and the cookie that binds
// it to the browser that started the flow. An empty token serves without
// a guard (in-process use and tests; ServeAdmin always has one).
func (w *Worker) AdminHandler(token secret.String) http.Handler {
	return w.adminHandler(token, "mailworker_admin")
}

func (w *Worker) adminHandler(token secret.String, cookie string) http.Handler {
	mux := http.NewServeMux()
	oauthH := w.tokens.Handler()
	auth := newAdminAuth(token, cookie, w.logger)
	guard := auth.guard
	if token.Empty() {
		guard = func(h http.Handler) http.Handler { return h }
	}
	mux.HandleFunc("GET /healthz", func(rw http.ResponseWriter, r *http.Request) {
		if !w.pub.Healthy() {
			http.Error(rw, "nats not connected", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(rw, "ok")
	})
	mux.HandleFunc("GET /readyz", func(rw http.ResponseWriter, r *http.Request) {
		if !w.pub.Healthy() {
			http.Error(rw, "not ready: nats not connected", http.StatusServiceUnavailable)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		if err := w.db.PingContext(ctx); err != nil {
			http.Error(rw, "not ready: database unreachable", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(rw, "ready")
	})
	mux.HandleFunc("GET /login", auth.login)
	mux.Handle("GET /{$}", guard(http.HandlerFunc(w.adminIndex)))
	mux.Handle("GET /status", guard(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		st, err := w.Status(r.Context())
		if err != nil {
			http.Error(rw, err.Error(), http.StatusInternalServerError)
			return
		}
		rw.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(rw)
		enc.SetIndent("", "  ")
		enc.Encode(st)
	})))
	mux.Handle("GET /oauth/start", guard(oauthH))
	mux.Handle("GET /oauth/callback", oauthH)
	return mux
}

var indexPage = template.Must(template.New("index").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>mailworker</title></head>
<body><h1>mailworker</h1>
<p><a href="/status">/status</a> (JSON: every server's last run and token state)</p>
{{with .}}<h2>OAuth</h2><ul>
{{range .}}<li>{{.}}: <a href="/oauth/start?server={{.}}">authorize</a></li>
{{end}}</ul>{{end}}
</body></html>
`))

// adminIndex lists the status page and the servers that can be authorized
// in a browser.
func (w *Worker) adminIndex(rw http.ResponseWriter, r *http.Request) {
	var names []string
	for _, s := range w.Config().Servers {
		if s.Auth.Method == config.AuthOAuth2 {
			if f := s.Auth.OAuth.Flow; f != config.FlowClientCredentials && f != config.FlowManual {
				names = append(names, s.Name)
			}
		}
	}
	rw.Header().Set("Content-Type", "text/html; charset=utf-8")
	rw.Header().Set("Cache-Control", "no-store")
	indexPage.Execute(rw, names)
}

// AdminListener describes a started admin listener.
type AdminListener struct {
	// URL is the listener's base URL, e.g. http://127.0.0.1:8025.
	URL string
	// LoginURL is the one-time login link logged at start ("" when the
	// token is configured rather than generated: it is not logged then).
	LoginURL string
	// TokenFile is the generated token's file ("" when configured).
	TokenFile string
}

// ServeAdmin starts the admin listener of the configuration until ctx is
// done. It returns nil, nil when admin.listen is off. The token is the
// configured one, or else (loopback only) the one generated in
// data_dir/admin.token at the first start; with a generated token the
// one-time login URL is logged. An error means no listener (a token that
// cannot be read, a non-loopback listen without a configured token, the
// port taken); callers log it and keep fetching.
func (w *Worker) ServeAdmin(ctx context.Context, getenv func(string) string) (*AdminListener, error) {
	cfg := w.Config()
	a := cfg.Admin
	if a.Listen == "" || a.Listen == "off" {
		return nil, nil
	}
	if err := a.Problem(getenv); err != nil {
		return nil, err
	}
	token, generated, err := AdminToken(cfg, getenv, true)
	if err != nil {
		return nil, err
	}
	out := &AdminListener{}
	if generated {
		out.TokenFile = AdminTokenPath(cfg)
		if fi, err := os.Stat(out.TokenFile); err == nil && fi.Mode().Perm()&0o077 != 0 {
			w.logger.Warn("admin token file is readable by other users; chmod 600 it", "path", out.TokenFile, "mode", fi.Mode().Perm().String())
		}
	}
	host, _, err := net.SplitHostPort(a.Listen)
	if err != nil {
		return nil, fmt.Errorf("admin.listen %q: %w", a.Listen, err)
	}
	ln, err := net.Listen("tcp", a.Listen)
	if err != nil {
		return nil, fmt.Errorf("admin listener: %w", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	out.URL = AdminBaseURL(host, port)
	srv := &http.Server{Handler: w.adminHandler(token, "mailworker_admin_"+strconv.Itoa(port)), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			w.logger.Error("admin listener stopped; fetching continues", "err", err)
		}
	}()
	if generated {
		out.LoginURL = out.URL + "/login?code=" + AdminLoginCode(token, time.Now())
		w.logger.Info(fmt.Sprintf("admin listener: open this one-time link in a browser (valid %d minutes; `mailworker admin-url` prints a new one)", int(LoginCodeTTL/time.Minute)),
			"url", out.LoginURL, "token_file", out.TokenFile)
	} else {
		w.logger.Info("admin listener: requests need the configured admin token (or a link from `mailworker admin-url`)", "url", out.URL)
	}
	return out, nil
}

// AdminBaseURL is the URL a browser on this machine opens for a listener
// bound to host and port: an unspecified host (all interfaces) becomes
// 127.0.0.1.
func AdminBaseURL(host string, port int) string {
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, strconv.Itoa(port))
}
