// Package migrations holds mailworker's database schema as goose SQL files,
// one directory per dialect (sqlite, postgres). Tables are prefixed by the
// package that owns them: fetcher_, pipeline_, oauth_.
package migrations

import "embed"

// FS holds sqlite/*.sql and postgres/*.sql.
//
//go:embed sqlite/*.sql postgres/*.sql
var FS embed.FS
