-- Owned by package pipeline: every message seen, failed raw mail, server state.
-- +goose Up
CREATE TABLE pipeline_ledger (
    id          BIGSERIAL PRIMARY KEY,
    server      TEXT NOT NULL,
    folder      TEXT NOT NULL,
    source_ref  TEXT NOT NULL DEFAULT '',
    raw_sha256  TEXT NOT NULL,
    raw_size    BIGINT NOT NULL DEFAULT 0,
    message_id  TEXT NOT NULL DEFAULT '',
    event_id    TEXT NOT NULL,
    kind        TEXT NOT NULL,
    subject     TEXT NOT NULL DEFAULT '',
    -- published | suppressed | failed
    status      TEXT NOT NULL,
    error       TEXT NOT NULL DEFAULT '',
    stream_seq  BIGINT NOT NULL DEFAULT 0,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX pipeline_ledger_raw ON pipeline_ledger (server, raw_sha256);
CREATE INDEX pipeline_ledger_msgid ON pipeline_ledger (server, message_id);

CREATE TABLE pipeline_failed (
    event_id    TEXT PRIMARY KEY,
    server      TEXT NOT NULL,
    folder      TEXT NOT NULL DEFAULT '',
    source_ref  TEXT NOT NULL DEFAULT '',
    raw_sha256  TEXT NOT NULL,
    raw_size    BIGINT NOT NULL DEFAULT 0,
    -- path of the raw copy, relative to data_dir
    raw_path    TEXT NOT NULL,
    error       TEXT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 1,
    -- pending | retried
    status      TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE pipeline_server_state (
    server          TEXT PRIMARY KEY,
    last_run_at     TIMESTAMPTZ,
    last_success_at TIMESTAMPTZ,
    next_run_at     TIMESTAMPTZ,
    last_error      TEXT NOT NULL DEFAULT '',
    fetched         BIGINT NOT NULL DEFAULT 0,
    published       BIGINT NOT NULL DEFAULT 0,
    suppressed      BIGINT NOT NULL DEFAULT 0,
    failed          BIGINT NOT NULL DEFAULT 0,
    duplicates      BIGINT NOT NULL DEFAULT 0,
    updated_at      TIMESTAMPTZ NOT NULL
);

-- +goose Down
DROP TABLE pipeline_server_state;
DROP TABLE pipeline_failed;
DROP TABLE pipeline_ledger;
