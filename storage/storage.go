// Package storage opens mailworker's database (SQLite by default,
// PostgreSQL in production) through sqlx and brings its schema up to date
// with the goose migrations in package migrations.
//
// Queries are written with ? placeholders and passed through db.Rebind, so
// the same SQL runs on both drivers.
package storage

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	_ "github.com/jackc/pgx/v5/stdlib" // registers "pgx"
	"github.com/jmoiron/sqlx"
	"github.com/pressly/goose/v3"
	_ "modernc.org/sqlite" // registers "sqlite"

	"github.com/mailworker/mailworker/config"
	"github.com/mailworker/mailworker/migrations"
)

func init() {
	// sqlx does not know the modernc driver name; without this Rebind would
	// leave ? untouched, which is what SQLite wants anyway, but be explicit.
	sqlx.BindDriver("sqlite", sqlx.QUESTION)
}

// Driver names accepted in config.Database.Driver.
const (
	SQLite   = "sqlite"
	Postgres = "postgres"
)

// Open connects to the database cfg describes and runs pending migrations.
// dataDir is where the default SQLite file lives.
func Open(ctx context.Context, cfg config.Database, dataDir string) (*sqlx.DB, error) {
	driver := cfg.Driver
	if driver == "" {
		driver = SQLite
	}
	var db *sqlx.DB
	var err error
	switch driver {
	case SQLite:
		dsn := cfg.DSN
		if dsn == "" {
			if err := os.MkdirAll(dataDir, 0o700); err != nil {
				return nil, fmt.Errorf("database: create data_dir: %w", err)
			}
			dsn = filepath.Join(dataDir, "mailworker.db")
		}
		db, err = sqlx.Open("sqlite", sqliteDSN(dsn))
		if err != nil {
			return nil, fmt.Errorf("database: open sqlite: %w", err)
		}
		// One writer connection: SQLite serialises writes anyway, and a
		// single connection avoids SQLITE_BUSY between our own goroutines.
		db.SetMaxOpenConns(1)
	case Postgres:
		if cfg.DSN == "" {
			return nil, fmt.Errorf("database: postgres needs a dsn")
		}
		db, err = sqlx.Open("pgx", cfg.DSN)
		if err != nil {
			return nil, fmt.Errorf("database: open postgres: %w", err)
		}
		db.SetMaxOpenConns(8)
	default:
		return nil, fmt.Errorf("database: unknown driver %q (want sqlite or postgres)", driver)
	}
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("database: connect %s: %w", driver, err)
	}
	sqliteFile := ""
	if driver == SQLite {
		sqliteFile = sqliteDSN(cfg.DSN)
		if cfg.DSN == "" {
			sqliteFile = filepath.Join(dataDir, "mailworker.db")
		}
	}
	if err := migrateLocked(ctx, db, driver, sqliteFile); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// sqliteDSN turns a path into a file: URI with the pragmas mailworker needs.
func sqliteDSN(dsn string) string {
	if strings.HasPrefix(dsn, "file:") {
		return dsn
	}
	return "file:" + dsn + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(1)&_txlock=immediate"
}

// Migrate runs the pending migrations of the given driver's dialect. On
// PostgreSQL it holds an advisory lock while it does; Open also locks a
// SQLite file (see migratelock.go).
func Migrate(ctx context.Context, db *sqlx.DB, driver string) error {
	return migrateLocked(ctx, db, driver, "")
}

// MigrateDown rolls every migration back (used by tests).
func MigrateDown(ctx context.Context, db *sqlx.DB, driver string) error {
	p, err := provider(db, driver)
	if err != nil {
		return err
	}
	if _, err := p.DownTo(ctx, 0); err != nil {
		return fmt.Errorf("database: migrate down: %w", err)
	}
	return nil
}

func provider(db *sqlx.DB, driver string, opts ...goose.ProviderOption) (*goose.Provider, error) {
	dialect, dir := goose.DialectSQLite3, "sqlite"
	if driver == Postgres {
		dialect, dir = goose.DialectPostgres, "postgres"
	}
	sub, err := fs.Sub(migrations.FS, dir)
	if err != nil {
		return nil, fmt.Errorf("database: migrations: %w", err)
	}
	p, err := goose.NewProvider(dialect, db.DB, sub, opts...)
	if err != nil {
		return nil, fmt.Errorf("database: migrations: %w", err)
	}
	return p, nil
}
