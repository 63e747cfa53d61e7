package pipeline

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
)

// counters are increments of a server's message counters.
type counters struct {
	fetched, published, suppressed, failed, duplicates int64
}

// ServerState is one server's row for `mailworker status`.
type ServerState struct {
	Server        string     `db:"server" json:"server"`
	LastRunAt     *time.Time `db:"last_run_at" json:"last_run_at"`         // nil before the first run
	LastSuccessAt *time.Time `db:"last_success_at" json:"last_success_at"` // nil before the first successful run
	NextRunAt     *time.Time `db:"next_run_at" json:"next_run_at"`         // nil when not scheduled
	LastError     string     `db:"last_error" json:"last_error"`           // "" after a successful run
	Fetched       int64      `db:"fetched" json:"fetched"`                 // messages delivered to the pipeline
	Published     int64      `db:"published" json:"published"`
	Suppressed    int64      `db:"suppressed" json:"suppressed"`
	Failed        int64      `db:"failed" json:"failed"`
	Duplicates    int64      `db:"duplicates" json:"duplicates"` // already in the ledger or in JetStream's window
	UpdatedAt     time.Time  `db:"updated_at" json:"updated_at"`
}

// bump adds c to server's counters.
func (p *Pipeline) bump(ctx context.Context, server string, c counters) error {
	return p.inTx(ctx, "server state "+server, func(tx *sqlx.Tx) error {
		return bumpTx(ctx, tx, server, c, p.now())
	})
}

func bumpTx(ctx context.Context, tx *sqlx.Tx, server string, c counters, now time.Time) error {
	_, err := tx.ExecContext(ctx, tx.Rebind(`
INSERT INTO pipeline_server_state (server, fetched, published, suppressed, failed, duplicates, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (server) DO UPDATE SET
  fetched = pipeline_server_state.fetched + excluded.fetched,
  published = pipeline_server_state.published + excluded.published,
  suppressed = pipeline_server_state.suppressed + excluded.suppressed,
  failed = pipeline_server_state.failed + excluded.failed,
  duplicates = pipeline_server_state.duplicates + excluded.duplicates,
  updated_at = excluded.updated_at`),
		server, c.fetched, c.published, c.suppressed, c.failed, c.duplicates, now.UTC())
	if err != nil {
		return fmt.Errorf("bump counters: %w", err)
	}
	return nil
}

// RecordRun records one fetch run of server: when it started, when the
// next is due (zero = not scheduled), and its error (nil = success, which
// also sets last_success_at and clears last_error). err's text is stored
// and shown by `mailworker status`; it must not contain secrets.
func (p *Pipeline) RecordRun(ctx context.Context, server string, started, next time.Time, err error) error {
	var nextAt sql.NullTime
	if !next.IsZero() {
		nextAt = sql.NullTime{Time: next.UTC(), Valid: true}
	}
	var success sql.NullTime
	msg := ""
	if err == nil {
		success = sql.NullTime{Time: started.UTC(), Valid: true}
	} else {
		msg = sqlText(err.Error(), maxErrorText)
	}
	_, dberr := p.db.ExecContext(ctx, p.db.Rebind(`
INSERT INTO pipeline_server_state (server, last_run_at, last_success_at, next_run_at, last_error, updated_at)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (server) DO UPDATE SET
  last_run_at = excluded.last_run_at,
  last_success_at = COALESCE(excluded.last_success_at, pipeline_server_state.last_success_at),
  next_run_at = excluded.next_run_at,
  last_error = excluded.last_error,
  updated_at = excluded.updated_at`),
		server, started.UTC(), success, nextAt, msg, p.now().UTC())
	if dberr != nil {
		return fmt.Errorf("server state %s: record run: %w", server, dberr)
	}
	return nil
}

// Status returns every server's state, ordered by name.
func (p *Pipeline) Status(ctx context.Context) ([]ServerState, error) {
	var st []ServerState
	err := p.db.SelectContext(ctx, &st, `SELECT server, last_run_at, last_success_at, next_run_at, last_error,
  fetched, published, suppressed, failed, duplicates, updated_at FROM pipeline_server_state ORDER BY server`)
	if err != nil {
		return nil, fmt.Errorf("server state: %w", err)
	}
	return st, nil
}
