// Package storagetest gives tests a migrated database of each supported
// driver: a fresh SQLite file, and a fresh schema in the machine's
// PostgreSQL (database "test").
//
// PostgreSQL is found at $MAILWORKER_TEST_POSTGRES, else at
// postgres://postgres@127.0.0.1:5432/test. When it cannot be reached the
// PostgreSQL case is skipped with a message, unless
// MAILWORKER_TEST_REQUIRE_POSTGRES=1 (set by .ci/run), which fails it.
package storagetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/mailworker/mailworker/config"
	"github.com/mailworker/mailworker/storage"
)

// DefaultPostgres is used when MAILWORKER_TEST_POSTGRES is unset.
const DefaultPostgres = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// Drivers lists the drivers tests should run against.
var Drivers = []string{storage.SQLite, storage.Postgres}

// Config returns a database config for driver, isolated for this test: a
// file in t.TempDir() for SQLite, a new schema (dropped at cleanup) for
// PostgreSQL. It skips or fails the test when PostgreSQL is unreachable.
func Config(t testing.TB, driver string) config.Database {
	t.Helper()
	if driver == storage.SQLite {
		return config.Database{Driver: storage.SQLite, DSN: filepath.Join(t.TempDir(), "test.db")}
	}
	base := os.Getenv("MAILWORKER_TEST_POSTGRES")
	if base == "" {
		base = DefaultPostgres
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	admin, err := sqlx.ConnectContext(ctx, "pgx", base)
	if err != nil {
		if os.Getenv("MAILWORKER_TEST_REQUIRE_POSTGRES") == "1" {
			t.Fatalf("postgres at %s required but unreachable: %v", redactURL(base), err)
		}
		t.Skipf("postgres at %s unreachable (set MAILWORKER_TEST_POSTGRES): %v", redactURL(base), err)
	}
	defer admin.Close()
	var b [6]byte
	rand.Read(b[:])
	schema := "mwtest_" + hex.EncodeToString(b[:])
	if _, err := admin.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("create schema: %v", err)
	}
	t.Cleanup(func() {
		db, err := sqlx.Connect("pgx", base)
		if err != nil {
			t.Logf("drop schema %s: %v", schema, err)
			return
		}
		defer db.Close()
		if _, err := db.Exec("DROP SCHEMA " + schema + " CASCADE"); err != nil {
			t.Logf("drop schema %s: %v", schema, err)
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("parse MAILWORKER_TEST_POSTGRES: %v", err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return config.Database{Driver: storage.Postgres, DSN: u.String()}
}

// Open returns a migrated database for driver, closed at cleanup.
func Open(t testing.TB, driver string) *sqlx.DB {
	t.Helper()
	cfg := Config(t, driver)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, err := storage.Open(ctx, cfg, t.TempDir())
	if err != nil {
		t.Fatalf("storage.Open(%s): %v", driver, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// ForEachDriver runs f as a subtest per driver.
func ForEachDriver(t *testing.T, f func(t *testing.T, db *sqlx.DB)) {
	for _, d := range Drivers {
		t.Run(d, func(t *testing.T) { f(t, Open(t, d)) })
	}
}

func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparseable url)"
	}
	return u.Redacted()
}
