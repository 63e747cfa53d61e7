-- Owned by package pipeline: every message seen, failed raw mail, server state.
-- +goose Up
CREATE TABLE pipeline_ledger (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    server      TEXT NOT NULL,
    folder      TEXT NOT NULL,
    source_ref  TEXT NOT NULL DEFAULT '',
    raw_sha256  TEXT NOT NULL,
    raw_size    INTEGER NOT NULL DEFAULT 0,
    message_id  TEXT NOT NULL DEFAULT '',
    event_id    TEXT NOT NULL,
    kind        TEXT NOT NULL,
    subject     TEXT NOT NULL DEFAULT '',
    -- published | suppressed | failed
    status      TEXT NOT NULL,
    error       TEXT NOT NULL DEFAULT '',
    stream_seq  INTEGER NOT NULL DEFAULT 0,
    created_at  DATETIME NOT NULL,
    updated_at  DATETIME NOT NULL
);
CREATE UNIQUE INDEX pipeline_ledger_raw ON pipeline_ledger (server, raw_sha256);
CREATE INDEX pipeline_ledger_msgid ON pipeline_ledger (server, message_id);

CREATE TABLE pipeline_failed (
    event_id    TEXT PRIMARY KEY,
    server      TEXT NOT NULL,
    folder      TEXT NOT NULL DEFAULT '',
    source_ref  TEXT NOT NULL DEFAULT '',
    raw_sha256  TEXT NOT NULL,
    raw_size    INTEGER NOT NULL DEFAULT 0,
    -- path of the raw copy, relative to data_dir
    raw_path    TEXT NOT NULL,
    error       TEXT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 1,
    -- pending | retried
    status      TEXT NOT NULL,
    created_at  DATETIME NOT NULL,
    updated_at  DATETIME NOT NULL
);

CREATE TABLE pipeline_server_state (
    server          TEXT PRIMARY KEY,
    last_run_at     DATETIME,
    last_success_at DATETIME,
    next_run_at     DATETIME,
    last_error      TEXT NOT NULL DEFAULT '',
    fetched         INTEGER NOT NULL DEFAULT 0,
    published       INTEGER NOT NULL DEFAULT 0,
    suppressed      INTEGER NOT NULL DEFAULT 0,
    failed          INTEGER NOT NULL DEFAULT 0,
    duplicates      INTEGER NOT NULL DEFAULT 0,
    updated_at      DATETIME NOT NULL
);

-- +goose Down
DROP TABLE pipeline_server_state;
DROP TABLE pipeline_failed;
DROP TABLE pipeline_ledger;
