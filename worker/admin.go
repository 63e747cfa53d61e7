package worker

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/mailworker/mailworker/config"
	"github.com/mailworker/mailworker/secret"
)

// AdminHandler serves the admin HTTP API:
//
//	GET /healthz              200 when NATS is connected, 503 otherwise
//	GET /status               per-server run state and token state (JSON)
//	GET /oauth/start?server=N starts an authorization code flow
//	GET /oauth/callback       the provider's redirect
//
// When token is set, /status and /oauth/start require it (Authorization:
// Bearer, or ?token= for a browser); the callback is protected by its
// single-use state instead.
func (w *Worker) AdminHandler(token secret.String) http.Handler {
	mux := http.NewServeMux()
	oauthH := w.tokens.Handler()
	guard := func(h http.Handler) http.Handler {
		if token.Empty() {
			return h
		}
		return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			got := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
			if got == "" {
				got = r.URL.Query().Get("token")
			}
			if subtle.ConstantTimeCompare([]byte(got), []byte(token.Reveal())) != 1 {
				http.Error(rw, "admin token required", http.StatusUnauthorized)
				return
			}
			h.ServeHTTP(rw, r)
		})
	}
	mux.HandleFunc("GET /healthz", func(rw http.ResponseWriter, r *http.Request) {
		if !w.pub.Healthy() {
			http.Error(rw, "nats not connected", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(rw, "ok")
	})
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

// ServeAdmin runs the admin listener of cfg until ctx is done. Listening
// anywhere but loopback requires an admin token.
func (w *Worker) ServeAdmin(ctx context.Context, cfg config.Admin, getenv func(string) string) error {
	if cfg.Listen == "" || cfg.Listen == "off" {
		return nil
	}
	token, err := adminToken(cfg, getenv)
	if err != nil {
		return err
	}
	host, _, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return fmt.Errorf("admin.listen %q: %w", cfg.Listen, err)
	}
	if ip := net.ParseIP(host); (ip == nil || !ip.IsLoopback()) && host != "localhost" && token.Empty() {
		return fmt.Errorf("admin.listen %s is not a loopback address: set admin.token_env or admin.token_file", cfg.Listen)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("admin listener: %w", err)
	}
	srv := &http.Server{Handler: w.AdminHandler(token), ReadHeaderTimeout: 10 * time.Second}
	w.logger.Info("admin listener", "addr", ln.Addr().String())
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			w.logger.Error("admin listener", "err", err)
		}
	}()
	return nil
}

func adminToken(cfg config.Admin, getenv func(string) string) (secret.String, error) {
	return cfg.TokenFrom(getenv)
}
