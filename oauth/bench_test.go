package oauth_test

import (
	"context"
	"testing"
	"time"

	"github.com/mailworker/mailworker/config"
	"github.com/mailworker/mailworker/oauth/oauthtest"
	"github.com/mailworker/mailworker/storage"
	"github.com/mailworker/mailworker/storage/storagetest"
)

// BenchmarkAccessToken measures the per-poll cost: a cached token, and a
// refresh (token endpoint round trip plus sealed write) on SQLite.
func BenchmarkAccessToken(b *testing.B) {
	db := storagetest.Open(b, storage.SQLite)
	e := newEnv(b, db, oauthtest.Options{})
	srv := e.server("bench", config.FlowPKCE, "b@example.test")
	e.authorize(srv)
	creds := e.m.Credentials(srv)
	ctx := context.Background()
	b.Run("cached", func(b *testing.B) {
		for b.Loop() {
			if _, err := creds.AccessToken(ctx, false); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("refresh", func(b *testing.B) {
		for b.Loop() {
			e.clock.Advance(2 * time.Hour)
			if _, err := creds.AccessToken(ctx, false); err != nil {
				b.Fatal(err)
			}
		}
	})
}
