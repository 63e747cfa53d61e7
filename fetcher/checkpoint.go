package fetcher

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
)

// Checkpoint is where a server's folder was left: the highest IMAP UID whose
// event was acknowledged (with the UIDVALIDITY it belongs to), or an opaque
// sync state (EWS SyncState, Graph deltaLink).
type Checkpoint struct {
	UIDValidity uint32    `db:"uidvalidity"`
	LastUID     uint32    `db:"last_uid"`
	SyncState   string    `db:"sync_state"`
	UpdatedAt   time.Time `db:"updated_at"`
}

// Checkpoints stores checkpoints in the fetcher_checkpoints table.
// It is safe for concurrent use.
type Checkpoints struct{ db *sqlx.DB }

// NewCheckpoints returns a store over db (migrated by package storage).
func NewCheckpoints(db *sqlx.DB) *Checkpoints { return &Checkpoints{db: db} }

// Get returns the checkpoint of server/folder; the zero Checkpoint (and no
// error) when there is none yet.
func (c *Checkpoints) Get(ctx context.Context, server, folder string) (Checkpoint, error) {
	var cp Checkpoint
	err := c.db.GetContext(ctx, &cp, c.db.Rebind(
		`SELECT uidvalidity, last_uid, sync_state, updated_at FROM fetcher_checkpoints WHERE server = ? AND folder = ?`),
		server, folder)
	if errors.Is(err, sql.ErrNoRows) {
		return Checkpoint{}, nil
	}
	if err != nil {
		return Checkpoint{}, fmt.Errorf("checkpoint %s/%s: %w", server, folder, err)
	}
	return cp, nil
}

// Put stores cp as the checkpoint of server/folder.
func (c *Checkpoints) Put(ctx context.Context, server, folder string, cp Checkpoint) error {
	_, err := c.db.ExecContext(ctx, c.db.Rebind(`
INSERT INTO fetcher_checkpoints (server, folder, uidvalidity, last_uid, sync_state, updated_at)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (server, folder) DO UPDATE SET
  uidvalidity = excluded.uidvalidity, last_uid = excluded.last_uid,
  sync_state = excluded.sync_state, updated_at = excluded.updated_at`),
		server, folder, cp.UIDValidity, cp.LastUID, cp.SyncState, time.Now().UTC())
	if err != nil {
		return fmt.Errorf("checkpoint %s/%s: store: %w", server, folder, err)
	}
	return nil
}

// Delete forgets every checkpoint of server (all folders).
func (c *Checkpoints) Delete(ctx context.Context, server string) error {
	if _, err := c.db.ExecContext(ctx, c.db.Rebind(`DELETE FROM fetcher_checkpoints WHERE server = ?`), server); err != nil {
		return fmt.Errorf("checkpoint %s: delete: %w", server, err)
	}
	return nil
}
