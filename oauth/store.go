package oauth

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"golang.org/x/oauth2"
)

// Stored token statuses (oauth_tokens.status).
const (
	statusValid       = "valid"
	statusNeedsReauth = "needs_reauth"
)

// tokenRow is one oauth_tokens row.
type tokenRow struct {
	Server      string       `db:"server"`
	Fingerprint string       `db:"fingerprint"`
	Ciphertext  []byte       `db:"ciphertext"`
	Expiry      sql.NullTime `db:"expiry"`
	RefreshedAt sql.NullTime `db:"refreshed_at"`
	Status      string       `db:"status"`
	LastError   string       `db:"last_error"`
	UpdatedAt   time.Time    `db:"updated_at"`
}

// sealedToken is what is encrypted in oauth_tokens.ciphertext.
type sealedToken struct {
	AccessToken  string    `json:"access_token"`
	TokenType    string    `json:"token_type,omitempty"`
	RefreshToken string    `json:"refresh_token,omitempty"`
	Expiry       time.Time `json:"expiry,omitzero"`
}

func tokenAD(server string) []byte { return []byte("oauth_tokens\x00" + server) }

func stateAD(state string) []byte { return []byte("oauth_states\x00" + state) }

func nullTime(t time.Time) sql.NullTime {
	if t.IsZero() {
		return sql.NullTime{}
	}
	return sql.NullTime{Time: t.UTC(), Valid: true}
}

// loadRow returns the server's row, or nil when there is none.
func (m *Manager) loadRow(ctx context.Context, server string) (*tokenRow, error) {
	var r tokenRow
	err := m.db.GetContext(ctx, &r, m.db.Rebind(`SELECT server, fingerprint, ciphertext, expiry, refreshed_at, status, last_error, updated_at
		FROM oauth_tokens WHERE server = ?`), server)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("oauth: load token of %s: %w", server, err)
	}
	return &r, nil
}

// openRow decrypts a row's token.
func (m *Manager) openRow(r *tokenRow) (*oauth2.Token, error) {
	pt, err := m.box.Open(r.Ciphertext, tokenAD(r.Server))
	if err != nil {
		return nil, fmt.Errorf("oauth: open stored token of %s: %w", r.Server, err)
	}
	var st sealedToken
	if err := json.Unmarshal(pt, &st); err != nil {
		return nil, fmt.Errorf("oauth: decode stored token of %s: %w", r.Server, err)
	}
	return &oauth2.Token{AccessToken: st.AccessToken, TokenType: st.TokenType, RefreshToken: st.RefreshToken, Expiry: st.Expiry}, nil
}

// saveToken stores tok as the server's valid token. refreshed says whether
// it came from a refresh (sets refreshed_at).
func (m *Manager) saveToken(ctx context.Context, s Settings, tok *oauth2.Token, refreshed bool) error {
	pt, err := json.Marshal(sealedToken{AccessToken: tok.AccessToken, TokenType: tok.TokenType, RefreshToken: tok.RefreshToken, Expiry: tok.Expiry})
	if err != nil {
		return fmt.Errorf("oauth: encode token of %s: %w", s.Server, err)
	}
	ct, err := m.box.Seal(pt, tokenAD(s.Server))
	if err != nil {
		return fmt.Errorf("oauth: seal token of %s: %w", s.Server, err)
	}
	now := m.now().UTC()
	var refreshedAt sql.NullTime
	if refreshed {
		refreshedAt = nullTime(now)
	}
	_, err = m.db.ExecContext(ctx, m.db.Rebind(`INSERT INTO oauth_tokens
		(server, fingerprint, ciphertext, expiry, refreshed_at, status, last_error, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, '', ?)
		ON CONFLICT (server) DO UPDATE SET fingerprint = excluded.fingerprint, ciphertext = excluded.ciphertext,
			expiry = excluded.expiry, refreshed_at = COALESCE(excluded.refreshed_at, oauth_tokens.refreshed_at),
			status = excluded.status, last_error = '', updated_at = excluded.updated_at`),
		s.Server, s.fingerprintRecord(), ct, nullTime(tok.Expiry), refreshedAt, statusValid, now)
	if err != nil {
		return fmt.Errorf("oauth: store token of %s: %w", s.Server, err)
	}
	return nil
}

// markNeedsReauth records a dead grant. lastErr must be secret-free.
func (m *Manager) markNeedsReauth(ctx context.Context, server, lastErr string) error {
	_, err := m.db.ExecContext(ctx, m.db.Rebind(`UPDATE oauth_tokens SET status = ?, last_error = ?, updated_at = ? WHERE server = ?`),
		statusNeedsReauth, lastErr, m.now().UTC(), server)
	if err != nil {
		return fmt.Errorf("oauth: mark %s needs_reauth: %w", server, err)
	}
	return nil
}

// setLastError records a transient failure without changing the status.
func (m *Manager) setLastError(ctx context.Context, server, lastErr string) error {
	_, err := m.db.ExecContext(ctx, m.db.Rebind(`UPDATE oauth_tokens SET last_error = ?, updated_at = ? WHERE server = ?`),
		lastErr, m.now().UTC(), server)
	if err != nil {
		return fmt.Errorf("oauth: record error of %s: %w", server, err)
	}
	return nil
}

func (m *Manager) deleteRow(ctx context.Context, server string) error {
	if _, err := m.db.ExecContext(ctx, m.db.Rebind(`DELETE FROM oauth_tokens WHERE server = ?`), server); err != nil {
		return fmt.Errorf("oauth: delete token of %s: %w", server, err)
	}
	return nil
}

// stateRow is one pending authorization (oauth_states).
type stateRow struct {
	Server      string    `db:"server"`
	Verifier    []byte    `db:"verifier"`
	RedirectURL string    `db:"redirect_url"`
	ExpiresAt   time.Time `db:"expires_at"`
}

// pending is what is sealed with a state: the PKCE verifier and the hash
// of the binding value.
type pending struct {
	Verifier string `json:"verifier"`
	Binding  string `json:"binding"`
}

// putState stores a pending authorization.
func (m *Manager) putState(ctx context.Context, state, server string, p pending, redirectURL string) error {
	pt, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("oauth: encode state for %s: %w", server, err)
	}
	sealed, err := m.box.Seal(pt, stateAD(state))
	if err != nil {
		return fmt.Errorf("oauth: seal verifier for %s: %w", server, err)
	}
	now := m.now().UTC()
	// Drop expired states so abandoned authorizations do not pile up.
	// Compared in Go: SQLite stores times as text.
	var old []struct {
		State     string    `db:"state"`
		ExpiresAt time.Time `db:"expires_at"`
	}
	if err := m.db.SelectContext(ctx, &old, `SELECT state, expires_at FROM oauth_states`); err != nil {
		return fmt.Errorf("oauth: list states: %w", err)
	}
	for _, o := range old {
		if now.After(o.ExpiresAt) {
			if _, err := m.db.ExecContext(ctx, m.db.Rebind(`DELETE FROM oauth_states WHERE state = ?`), o.State); err != nil {
				return fmt.Errorf("oauth: delete expired state: %w", err)
			}
		}
	}
	_, err = m.db.ExecContext(ctx, m.db.Rebind(`INSERT INTO oauth_states (state, server, verifier, redirect_url, created_at, expires_at)
		VALUES (?, ?, ?, ?, ?, ?)`), state, server, sealed, redirectURL, now, now.Add(StateTTL))
	if err != nil {
		return fmt.Errorf("oauth: store state for %s: %w", server, err)
	}
	return nil
}

// takeState deletes and returns a pending authorization: a state works
// once. It returns ErrState when the state is unknown or expired. A state
// stored by an older version (a bare verifier, no binding) comes back with
// an empty binding, which Exchange refuses.
func (m *Manager) takeState(ctx context.Context, state string) (*stateRow, pending, error) {
	var r stateRow
	err := m.db.GetContext(ctx, &r, m.db.Rebind(`DELETE FROM oauth_states WHERE state = ? RETURNING server, verifier, redirect_url, expires_at`), state)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, pending{}, ErrState
	}
	if err != nil {
		return nil, pending{}, fmt.Errorf("oauth: take state: %w", err)
	}
	if m.now().After(r.ExpiresAt) {
		return nil, pending{}, fmt.Errorf("%w (expired)", ErrState)
	}
	var p pending
	if len(r.Verifier) > 0 {
		pt, err := m.box.Open(r.Verifier, stateAD(state))
		if err != nil {
			return nil, pending{}, fmt.Errorf("oauth: open verifier for %s: %w", r.Server, err)
		}
		if err := json.Unmarshal(pt, &p); err != nil {
			p = pending{Verifier: string(pt)}
		}
	}
	return &r, p, nil
}
