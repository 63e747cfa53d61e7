package storage

import (
	"context"
	"fmt"
	"hash/fnv"
	"os"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/mailworker/mailworker/internal/flock"
)

// Several processes may open one database at once: `mailworker status` while
// `run` starts, or the workers of a cluster. Their migrations must not race
// (two migrators both see version 0 and both CREATE TABLE), so each runs
// under a lock:
//
//   - PostgreSQL: a session advisory lock (goose's session locker), keyed by
//     database and schema, so instances in different schemas do not wait for
//     each other;
//   - SQLite: an flock on a file beside the database file.

// postgresLocker returns goose's advisory-lock session locker with a lock id
// derived from the connection's database and schema.
func postgresLocker(ctx context.Context, db *sqlx.DB) (lock.SessionLocker, error) {
	var database, schema string
	if err := db.QueryRowContext(ctx, "SELECT current_database(), COALESCE(current_schema(), '')").Scan(&database, &schema); err != nil {
		return nil, fmt.Errorf("database: migration lock: %w", err)
	}
	h := fnv.New64a()
	h.Write([]byte("mailworker-migrate\x00" + database + "\x00" + schema))
	// Retry every second for up to five minutes: a migration that holds the
	// lock longer than that is stuck, and the error says so.
	return lock.NewPostgresSessionLocker(lock.WithLockID(int64(h.Sum64()>>1)), lock.WithLockTimeout(1, 300))
}

// sqliteLockPath is the lock file for the SQLite database at dsn, or "" for
// an in-memory database.
func sqliteLockPath(dsn string) string {
	path := strings.TrimPrefix(dsn, "file:")
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	if path == "" || path == ":memory:" || strings.Contains(dsn, "mode=memory") {
		return ""
	}
	return path + ".migrate-lock"
}

// withFileLock runs f while holding an exclusive flock on path, waiting for
// it until ctx is done.
func withFileLock(ctx context.Context, path string, f func() error) error {
	if path == "" {
		return f()
	}
	file, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("database: migration lock %s: %w", path, err)
	}
	defer file.Close()
	for {
		ok, err := flock.TryLock(file)
		if err != nil {
			return fmt.Errorf("database: migration lock %s: %w", path, err)
		}
		if ok {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("database: waiting for the migration lock %s: %w", path, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	defer flock.Unlock(file)
	return f()
}

// migrateLocked runs the pending migrations under the driver's lock.
func migrateLocked(ctx context.Context, db *sqlx.DB, driver, sqliteDSN string) error {
	var opts []goose.ProviderOption
	if driver == Postgres {
		locker, err := postgresLocker(ctx, db)
		if err != nil {
			return err
		}
		opts = append(opts, goose.WithSessionLocker(locker))
	}
	return withFileLock(ctx, sqliteLockPath(sqliteDSN), func() error {
		p, err := provider(db, driver, opts...)
		if err != nil {
			return err
		}
		if _, err := p.Up(ctx); err != nil {
			return fmt.Errorf("database: migrate: %w", err)
		}
		return nil
	})
}
