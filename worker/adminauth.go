package worker

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mailworker/mailworker/config"
	"github.com/mailworker/mailworker/secret"
)

const (
	// AdminTokenFile is the file in data_dir holding the admin token that
	// `mailworker run` generates when none is configured.
	AdminTokenFile = "admin.token"
	// LoginCodeTTL is how long a one-time login link stays valid.
	LoginCodeTTL = 10 * time.Minute
	// SessionTTL is how long the admin cookie a login link sets stays valid.
	SessionTTL = 12 * time.Hour
)

// ErrNoAdminToken is returned by AdminToken when no token is configured and
// none has been generated in data_dir yet.
var ErrNoAdminToken = errors.New("no admin token")

// AdminToken returns the admin listener's bearer token: the configured
// admin.token_env or admin.token_file, else the token generated in
// data_dir/admin.token. With create set, a missing generated token is
// created (32 random bytes, mode 0600, never overwriting another process's
// file). generated reports whether the token is the data_dir one. Errors
// never contain the token.
func AdminToken(cfg *config.Config, getenv func(string) string, create bool) (tok secret.String, generated bool, err error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	if cfg.Admin.TokenEnv != "" || cfg.Admin.TokenFile != "" {
		tok, err = cfg.Admin.TokenFrom(getenv)
		return tok, false, err
	}
	path := AdminTokenPath(cfg)
	tok, err = readAdminToken(path)
	if errors.Is(err, fs.ErrNotExist) {
		if !create {
			return secret.String{}, true, fmt.Errorf("%w: %s does not exist yet (`mailworker run` creates it at its first start)", ErrNoAdminToken, path)
		}
		tok, err = createAdminToken(path)
	}
	return tok, true, err
}

// AdminTokenPath is where the generated admin token is kept.
func AdminTokenPath(cfg *config.Config) string {
	dir := cfg.DataDir
	if dir == "" {
		dir = config.DefaultDataDir
	}
	return filepath.Join(dir, AdminTokenFile)
}

func readAdminToken(path string) (secret.String, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return secret.String{}, fmt.Errorf("admin token: %w", err)
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		return secret.String{}, fmt.Errorf("admin token: %s is empty; delete it and restart to generate a new one", path)
	}
	return secret.New(v), nil
}

// createAdminToken writes a new token to a temporary file and links it to
// path, so the file is never seen half-written and a concurrent creator's
// file wins.
func createAdminToken(path string) (secret.String, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return secret.String{}, fmt.Errorf("admin token: %w", err)
	}
	v := base64.RawURLEncoding.EncodeToString(randBytes(32))
	f, err := os.CreateTemp(filepath.Dir(path), ".admin.token-*")
	if err != nil {
		return secret.String{}, fmt.Errorf("admin token: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	_, werr := f.WriteString(v + "\n")
	if err := errors.Join(werr, f.Chmod(0o600), f.Sync(), f.Close()); err != nil {
		return secret.String{}, fmt.Errorf("admin token: write %s: %w", tmp, err)
	}
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return readAdminToken(path)
		}
		return secret.String{}, fmt.Errorf("admin token: create %s: %w", path, err)
	}
	return secret.New(v), nil
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b) // never fails (crypto/rand, Go 1.24+)
	return b
}

// AdminLoginCode mints a one-time login code for the admin listener whose
// token is tok, valid for LoginCodeTTL from now. Open
// http://<admin listener>/login?code=CODE in a browser: the listener sets
// its session cookie and redirects to a URL without the code. The code
// proves knowledge of the token without containing it.
func AdminLoginCode(tok secret.String, now time.Time) string {
	return signed(tok, "login", now.Add(LoginCodeTTL))
}

// signed is "<unix expiry>.<nonce>.<mac>" with mac an HMAC-SHA256 keyed
// with the admin token over purpose, expiry and nonce.
func signed(tok secret.String, purpose string, exp time.Time) string {
	payload := strconv.FormatInt(exp.Unix(), 10) + "." + base64.RawURLEncoding.EncodeToString(randBytes(16))
	return payload + "." + adminMAC(tok, purpose, payload)
}

func adminMAC(tok secret.String, purpose, payload string) string {
	h := hmac.New(sha256.New, []byte(tok.Reveal()))
	h.Write([]byte("mailworker admin " + purpose + "\x00" + payload))
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil))
}

// verify checks a signed value and returns its nonce and expiry.
func verify(tok secret.String, purpose, v string, now time.Time, ttl time.Duration) (nonce string, exp time.Time, ok bool) {
	i := strings.LastIndexByte(v, '.')
	if i < 0 {
		return "", time.Time{}, false
	}
	payload, mac := v[:i], v[i+1:]
	if subtle.ConstantTimeCompare([]byte(mac), []byte(adminMAC(tok, purpose, payload))) != 1 {
		return "", time.Time{}, false
	}
	secs, nonce, ok := strings.Cut(payload, ".")
	n, err := strconv.ParseInt(secs, 10, 64)
	if !ok || err != nil {
		return "", time.Time{}, false
	}
	exp = time.Unix(n, 0)
	if !now.Before(exp) || exp.After(now.Add(ttl+time.Minute)) {
		return "", time.Time{}, false
	}
	return nonce, exp, true
}

// adminAuth guards the admin listener: a bearer token, or a session cookie
// obtained from a one-time login link.
type adminAuth struct {
	token   secret.String
	cookie  string // cookie name, per listener port (cookies ignore ports)
	now     func() time.Time
	log     *slog.Logger
	started time.Time // login codes issued before it are refused (used ones are only remembered since)

	mu   sync.Mutex
	used map[string]time.Time // login code nonces already used, until expiry
}

func newAdminAuth(tok secret.String, cookie string, logger *slog.Logger) *adminAuth {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &adminAuth{token: tok, cookie: cookie, now: time.Now, log: logger, started: time.Now().Truncate(time.Second), used: map[string]time.Time{}}
}

// authorized reports whether r carries the bearer token or a valid session
// cookie.
func (a *adminAuth) authorized(r *http.Request) bool {
	if h := r.Header.Get("Authorization"); h != "" {
		got, ok := strings.CutPrefix(h, "Bearer ")
		return ok && subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), []byte(a.token.Reveal())) == 1
	}
	c, err := r.Cookie(a.cookie)
	if err != nil {
		return false
	}
	_, _, ok := verify(a.token, "session", c.Value, a.now(), SessionTTL)
	return ok
}

// guard wraps h with the token check.
func (a *adminAuth) guard(h http.Handler) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if !a.authorized(r) {
			rw.Header().Set("WWW-Authenticate", `Bearer realm="mailworker admin"`)
			http.Error(rw, "admin token required: send Authorization: Bearer <token>, or open a login link from `mailworker admin-url`", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(rw, r)
	})
}

// login serves GET /login?code=…: a valid, unused code sets the session
// cookie and redirects to "/", so the code does not stay in the address
// bar or the history entry of the page the administrator uses.
func (a *adminAuth) login(rw http.ResponseWriter, r *http.Request) {
	rw.Header().Set("Cache-Control", "no-store")
	rw.Header().Set("Referrer-Policy", "no-referrer")
	now := a.now()
	nonce, exp, ok := verify(a.token, "login", r.URL.Query().Get("code"), now, LoginCodeTTL)
	// A code issued before this listener started may have been used with
	// a previous process, which alone knew: refuse it, so a code works once
	// across restarts too.
	if ok && exp.Add(-LoginCodeTTL).Before(a.started) {
		ok = false
	}
	if ok {
		a.mu.Lock()
		for n, e := range a.used {
			if !now.Before(e) {
				delete(a.used, n)
			}
		}
		if _, seen := a.used[nonce]; seen {
			ok = false
		} else {
			a.used[nonce] = exp
		}
		a.mu.Unlock()
	}
	if !ok {
		a.log.Warn("admin login refused: link invalid, expired or already used")
		http.Error(rw, "this login link is invalid, expired or already used; run `mailworker admin-url` for a new one", http.StatusUnauthorized)
		return
	}
	http.SetCookie(rw, &http.Cookie{
		Name:     a.cookie,
		Value:    signed(a.token, "session", now.Add(SessionTTL)),
		Path:     "/",
		MaxAge:   int(SessionTTL / time.Second),
		HttpOnly: true,
		Secure:   r.TLS != nil,
		SameSite: http.SameSiteStrictMode,
	})
	http.Redirect(rw, r, "/", http.StatusSeeOther)
}
