-- Owned by package fetcher: where each server and folder stopped.
-- +goose Up
CREATE TABLE fetcher_checkpoints (
    server      TEXT NOT NULL,
    folder      TEXT NOT NULL,
    -- IMAP: UIDVALIDITY and highest UID whose event was acknowledged.
    uidvalidity BIGINT NOT NULL DEFAULT 0,
    last_uid    BIGINT NOT NULL DEFAULT 0,
    -- EWS SyncState or Graph deltaLink; opaque.
    sync_state  TEXT NOT NULL DEFAULT '',
    updated_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (server, folder)
);

-- +goose Down
DROP TABLE fetcher_checkpoints;
