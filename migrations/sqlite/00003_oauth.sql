-- Owned by package oauth: encrypted tokens and pending authorizations.
-- +goose Up
CREATE TABLE oauth_tokens (
    server       TEXT PRIMARY KEY,
    -- hash of the settings that produced the token; a change deletes it
    fingerprint  TEXT NOT NULL,
    -- AES-256-GCM sealed JSON of the oauth2.Token
    ciphertext   BLOB NOT NULL,
    expiry       DATETIME,
    refreshed_at DATETIME,
    -- valid | needs_reauth
    status       TEXT NOT NULL,
    last_error   TEXT NOT NULL DEFAULT '',
    updated_at   DATETIME NOT NULL
);

CREATE TABLE oauth_states (
    state        TEXT PRIMARY KEY,
    server       TEXT NOT NULL,
    -- sealed PKCE verifier, empty without PKCE
    verifier     BLOB NOT NULL,
    redirect_url TEXT NOT NULL DEFAULT '',
    created_at   DATETIME NOT NULL,
    expires_at   DATETIME NOT NULL
);

-- +goose Down
DROP TABLE oauth_states;
DROP TABLE oauth_tokens;
