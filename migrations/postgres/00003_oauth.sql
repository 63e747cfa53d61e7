-- Owned by package oauth: encrypted tokens and pending authorizations.
-- +goose Up
CREATE TABLE oauth_tokens (
    server       TEXT PRIMARY KEY,
    -- hash of the settings that produced the token; a change deletes it
    fingerprint  TEXT NOT NULL,
    -- AES-256-GCM sealed JSON of the oauth2.Token
    ciphertext   BYTEA NOT NULL,
    expiry       TIMESTAMPTZ,
    refreshed_at TIMESTAMPTZ,
    -- valid | needs_reauth
    status       TEXT NOT NULL,
    last_error   TEXT NOT NULL DEFAULT '',
    updated_at   TIMESTAMPTZ NOT NULL
);

CREATE TABLE oauth_states (
    state        TEXT PRIMARY KEY,
    server       TEXT NOT NULL,
    -- sealed PKCE verifier, empty without PKCE
    verifier     BYTEA NOT NULL,
    redirect_url TEXT NOT NULL DEFAULT '',
    created_at   TIMESTAMPTZ NOT NULL,
    expires_at   TIMESTAMPTZ NOT NULL
);

-- +goose Down
DROP TABLE oauth_states;
DROP TABLE oauth_tokens;
