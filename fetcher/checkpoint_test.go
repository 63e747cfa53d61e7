package fetcher

import (
	"context"
	"testing"

	"github.com/jmoiron/sqlx"

	"github.com/mailworker/mailworker/storage/storagetest"
)

func TestCheckpoints(t *testing.T) {
	storagetest.ForEachDriver(t, func(t *testing.T, db *sqlx.DB) {
		ctx := context.Background()
		cps := NewCheckpoints(db)
		got, err := cps.Get(ctx, "a", "INBOX")
		if err != nil || got != (Checkpoint{}) {
			t.Fatalf("Get(empty) = %+v, %v; want zero, nil", got, err)
		}
		want := Checkpoint{UIDValidity: 4000000000, LastUID: 42}
		if err := cps.Put(ctx, "a", "INBOX", want); err != nil {
			t.Fatal(err)
		}
		if err := cps.Put(ctx, "a", "Other", Checkpoint{SyncState: "s1"}); err != nil {
			t.Fatal(err)
		}
		want.LastUID = 43
		if err := cps.Put(ctx, "a", "INBOX", want); err != nil {
			t.Fatal(err)
		}
		got, err = cps.Get(ctx, "a", "INBOX")
		if err != nil || got.UIDValidity != want.UIDValidity || got.LastUID != 43 || got.UpdatedAt.IsZero() {
			t.Fatalf("Get = %+v, %v; want %+v with a time", got, err, want)
		}
		if err := cps.Delete(ctx, "a"); err != nil {
			t.Fatal(err)
		}
		if got, _ := cps.Get(ctx, "a", "Other"); got.SyncState != "" {
			t.Fatalf("after Delete, Get(Other) = %+v", got)
		}
	})
}
