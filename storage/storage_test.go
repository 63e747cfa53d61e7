package storage_test

import (
	"context"
	"testing"

	"github.com/jmoiron/sqlx"

	"github.com/mailworker/mailworker/storage"
	"github.com/mailworker/mailworker/storage/storagetest"
)

// TestMigrateUpDownUp runs the whole schema up, down and up again on each
// driver, and checks that every owned table exists afterwards.
func TestMigrateUpDownUp(t *testing.T) {
	for _, driver := range storagetest.Drivers {
		t.Run(driver, func(t *testing.T) {
			db := storagetest.Open(t, driver)
			ctx := context.Background()
			if err := storage.MigrateDown(ctx, db, driver); err != nil {
				t.Fatal(err)
			}
			if tableExists(t, db, "pipeline_ledger") {
				t.Fatalf("pipeline_ledger still exists after down")
			}
			if err := storage.Migrate(ctx, db, driver); err != nil {
				t.Fatal(err)
			}
			for _, table := range []string{"fetcher_checkpoints", "pipeline_ledger", "pipeline_failed", "pipeline_server_state", "oauth_tokens", "oauth_states"} {
				if !tableExists(t, db, table) {
					t.Errorf("table %s missing after up", table)
				}
			}
		})
	}
}

func tableExists(t *testing.T, db *sqlx.DB, name string) bool {
	t.Helper()
	_, err := db.Exec("SELECT 1 FROM " + name + " WHERE 1=0")
	return err == nil
}
