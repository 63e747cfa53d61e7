package pipeline

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
)

// Ledger statuses (pipeline_ledger.status).
const (
	StatusPublished  = "published"  // event published on its kind's subject
	StatusSuppressed = "suppressed" // new request published on the suppressed subject
	StatusFailed     = "failed"     // unparseable; failed event published, raw kept
)

// ledgerRow is one pipeline_ledger row: one raw message per server.
type ledgerRow struct {
	Server    string `db:"server"`
	Folder    string `db:"folder"`
	SourceRef string `db:"source_ref"`
	RawSHA256 string `db:"raw_sha256"`
	RawSize   int64  `db:"raw_size"`
	MessageID string `db:"message_id"`
	EventID   string `db:"event_id"`
	Kind      string `db:"kind"`
	Subject   string `db:"subject"`
	Status    string `db:"status"`
	Error     string `db:"error"`
	StreamSeq uint64 `db:"stream_seq"`
}

// ledgerStatusSQL returns the ledger status of (server, sha), "" when the
// raw message was never recorded, and how many runs failed on it
// (pipeline_attempts), in one round trip.
const ledgerStatusSQL = `SELECT
  COALESCE((SELECT status FROM pipeline_ledger WHERE server = ? AND raw_sha256 = ?), ''),
  COALESCE((SELECT attempts FROM pipeline_attempts WHERE server = ? AND raw_sha256 = ?), 0)`

// ledgerStatus returns the status of (server, sha) in the ledger ("" when
// the raw message was never recorded) and the failed attempts counted on
// it. It runs once per delivered message, so its statement is prepared
// once.
func (p *Pipeline) ledgerStatus(ctx context.Context, server, sha string) (string, int, error) {
	p.stmtMu.Lock()
	if p.statusStmt == nil {
		st, err := p.db.PreparexContext(ctx, p.db.Rebind(ledgerStatusSQL))
		if err != nil {
			p.stmtMu.Unlock()
			return "", 0, fmt.Errorf("ledger %s: prepare lookup: %w", server, err)
		}
		p.statusStmt = st
	}
	stmt := p.statusStmt
	p.stmtMu.Unlock()
	var st string
	var attempts int
	err := stmt.QueryRowxContext(ctx, server, sha, server, sha).Scan(&st, &attempts)
	if errors.Is(err, sql.ErrNoRows) {
		return "", 0, nil
	}
	if err != nil {
		return "", 0, fmt.Errorf("ledger %s: look up raw %s: %w", server, sha, err)
	}
	return st, attempts, nil
}

// knownMessageIDs returns those of ids that the ledger holds as published
// or suppressed Message-IDs of server. ids and the result are sqlKey
// forms.
func (p *Pipeline) knownMessageIDs(ctx context.Context, server string, ids []string) ([]string, error) {
	q, args, err := sqlx.In(`SELECT DISTINCT message_id FROM pipeline_ledger
WHERE server = ? AND status IN (?, ?) AND message_id IN (?)`, server, StatusPublished, StatusSuppressed, ids)
	if err != nil {
		return nil, fmt.Errorf("ledger %s: thread lookup: %w", server, err)
	}
	var found []string
	if err := p.db.SelectContext(ctx, &found, p.db.Rebind(q), args...); err != nil {
		return nil, fmt.Errorf("ledger %s: thread lookup: %w", server, err)
	}
	return found, nil
}

const insertLedgerSQL = `
INSERT INTO pipeline_ledger (server, folder, source_ref, raw_sha256, raw_size, message_id, event_id,
  kind, subject, status, error, stream_seq, created_at, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (server, raw_sha256) DO NOTHING`

// ledgerArgs are row's values for insertLedgerSQL. The Message-ID goes
// through sqlKey and the free texts through sqlText here, whatever the
// caller did, so that no header value can make the database refuse a row.
func ledgerArgs(row ledgerRow, now time.Time) []any {
	return []any{row.Server, sqlText(row.Folder, 1000), sqlText(row.SourceRef, 1000), row.RawSHA256, row.RawSize,
		sqlKey(row.MessageID), row.EventID, row.Kind, row.Subject, row.Status, sqlText(row.Error, 2000),
		int64(row.StreamSeq), now, now}
}

// insertLedger inserts row unless the raw message is recorded already;
// it reports whether it inserted.
func insertLedger(ctx context.Context, tx *sqlx.Tx, row ledgerRow, now time.Time) (bool, error) {
	res, err := tx.ExecContext(ctx, tx.Rebind(insertLedgerSQL), ledgerArgs(row, now.UTC())...)
	if err != nil {
		return false, fmt.Errorf("insert ledger row: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("insert ledger row: %w", err)
	}
	return n == 1, nil
}

// inTx runs f in a transaction, committing when it returns nil.
func (p *Pipeline) inTx(ctx context.Context, op string, f func(tx *sqlx.Tx) error) error {
	tx, err := p.db.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("%s: begin: %w", op, err)
	}
	if err := f(tx); err != nil {
		if rerr := tx.Rollback(); rerr != nil && !errors.Is(rerr, sql.ErrTxDone) {
			p.logger.Warn("rollback failed", "op", op, "err", rerr)
		}
		return fmt.Errorf("%s: %w", op, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("%s: commit: %w", op, err)
	}
	return nil
}
