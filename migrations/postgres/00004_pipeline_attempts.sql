-- Owned by package pipeline: runs that failed on a message with an error
-- that is neither an outage nor known to be permanent. After MaxAttempts
-- (5) such runs the message is quarantined (published as failed). A row is
-- deleted once its message is recorded in pipeline_ledger.
-- +goose Up
CREATE TABLE pipeline_attempts (
    server      TEXT NOT NULL,
    raw_sha256  TEXT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT NOT NULL DEFAULT '',
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (server, raw_sha256)
);

-- +goose Down
DROP TABLE pipeline_attempts;
