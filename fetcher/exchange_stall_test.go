package fetcher_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mailworker/mailworker/config"
	"github.com/mailworker/mailworker/fetcher"
	"github.com/mailworker/mailworker/fetcher/exchangetest"
	"github.com/mailworker/mailworker/stallconn"
	"github.com/mailworker/mailworker/storage"
	"github.com/mailworker/mailworker/storage/storagetest"
)

// TestExchangeStallMidBody: an EWS or Graph server that stops sending in
// the middle of a message's MIME (headers and part of the body sent, the
// connection left open) fails the run after the stall timeout, long before
// the body's total limit, with an error naming the step and the silence;
// nothing is checkpointed past the message, and the next run (the server
// healthy again) delivers everything exactly once.
func TestExchangeStallMidBody(t *testing.T) {
	const stall = time.Second
	for _, proto := range []string{"ews", "graph"} {
		t.Run(proto, func(t *testing.T) {
			cps := fetcher.NewCheckpoints(storagetest.Open(t, storage.SQLite))
			var srv config.Server
			var creds *exCreds
			var mb *exchangetest.Mailbox
			switch proto {
			case "ews":
				fake := exchangetest.NewEWS(t, exchangetest.EWSOptions{Username: ewsUser, Password: ewsPassword})
				fake.StallResponse("GetItem", 600)
				srv, creds, mb = ewsServer(fake), &exCreds{password: ewsPassword}, fake.Mailbox
			case "graph":
				fake := newGraphFake(t, 0)
				fake.StallValue(100)
				srv, creds, mb = graphServer(fake), &exCreds{tokens: []string{"tok"}}, fake.Mailbox
			}
			srv.StallTimeout = config.Duration(stall)
			raws, _ := exSeed(mb, "inbox", 3)
			newF := func() fetcher.Fetcher {
				f, err := fetcher.New(srv, fetcher.Deps{Checkpoints: cps, Credentials: creds, Logger: exLogger(t), SpoolDir: t.TempDir()})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { f.Close() })
				return f
			}
			sink := &exchangetest.Sink{}
			start := time.Now()
			_, err := newF().Fetch(exCtx(t), sink)
			took := time.Since(start)
			var se *stallconn.Error
			if !errors.Is(err, stallconn.ErrStalled) || !errors.As(err, &se) {
				t.Fatalf("Fetch = %v; want a stall", err)
			}
			if se.Silent < stall || took > stall+10*time.Second {
				t.Fatalf("stall after %s (silent %s); want about %s", took, se.Silent, stall)
			}
			if msg := err.Error(); !strings.Contains(msg, "HTTP response body") || !strings.Contains(msg, srv.Name) ||
				!strings.Contains(msg, "no byte received for") {
				t.Fatalf("error %q does not name the server, the step and the silence", msg)
			}
			t.Logf("after %s: %v", took, err)
			// The next run, the server answering again, delivers the rest.
			sink2 := &exchangetest.Sink{}
			if _, err := newF().Fetch(exCtx(t), sink2); err != nil {
				t.Fatalf("second Fetch: %v", err)
			}
			all := append(sink.Deliveries(), sink2.Deliveries()...)
			seen := map[string]int{}
			for _, d := range all {
				seen[d.Ref]++
			}
			for _, raw := range raws {
				if !sink.Acked(raw) && !sink2.Acked(raw) {
					t.Fatalf("a message was never delivered")
				}
			}
			if len(seen) != len(raws) {
				t.Fatalf("%d distinct messages delivered; want %d", len(seen), len(raws))
			}
		})
	}
}
