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

const ledgerStatusSQL = `SELECT status FROM pipeline_ledger WHERE server = ? AND raw_sha256 = ?`

// ledgerStatus returns the status of (server, sha) in the ledger, "" when
// the raw message was never recorded. It runs once per delivered message,
// so its statement is prepared once.
func (p *Pipeline) ledgerStatus(ctx context.Context, server, sha string) (string, error) {
	p.stmtMu.Lock()
	if p.statusStmt == nil {
		st, err := p.db.PreparexContext(ctx, p.db.Rebind(ledgerStatusSQL))
		if err != nil {
			p.stmtMu.Unlock()
			return "", fmt.Errorf("ledger %s: prepare lookup: %w", server, err)
		}
		p.statusStmt = st
	}
	stmt := p.statusStmt
	p.stmtMu.Unlock()
	var st string
	err := stmt.GetContext(ctx, &st, server, sha)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("ledger %s: look up raw %s: %w", server, sha, err)
	}
	return st, nil
}

// knownMessageIDs returns those of ids that the ledger holds as published
// or suppressed Message-IDs of server.
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

func ledgerArgs(row ledgerRow, now time.Time) []any {
	return []any{row.Server, row.Folder, row.SourceRef, row.RawSHA256, row.RawSize, row.MessageID, row.EventID,
		row.Kind, row.Subject, row.Status, row.Error, int64(row.StreamSeq), now, now}
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
