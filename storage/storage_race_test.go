package storage_test

import (
	"context"
	"sync"
	"testing"

	"github.com/mailworker/mailworker/storage"
	"github.com/mailworker/mailworker/storage/storagetest"
)

// TestConcurrentOpenMigratesOnce opens one fresh database from several
// goroutines at once, as `mailworker status` does while `run` is starting.
// Every Open must succeed: the migrations run once, under a lock, instead of
// two migrators both creating the same tables ("table … already exists").
func TestConcurrentOpenMigratesOnce(t *testing.T) {
	for _, driver := range storagetest.Drivers {
		t.Run(driver, func(t *testing.T) {
			cfg := storagetest.Config(t, driver)
			dataDir := t.TempDir()
			const n = 6
			var wg sync.WaitGroup
			errs := make([]error, n)
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					db, err := storage.Open(context.Background(), cfg, dataDir)
					if err == nil {
						db.Close()
					}
					errs[i] = err
				}()
			}
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Errorf("Open #%d: %v", i, err)
				}
			}
		})
	}
}
