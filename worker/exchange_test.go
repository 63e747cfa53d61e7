package worker

import (
	"context"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/mailworker/mailworker/config"
	"github.com/mailworker/mailworker/fetcher/exchangetest"
	"github.com/mailworker/mailworker/storage/storagetest"
)

// TestExactlyOnceExchange runs the IMAP acceptance scenarios through the
// whole worker for EWS and Graph (against the exchangetest fakes): a broker
// outage in the middle of the sync, a restart, and an invalidated sync
// state (EWS ErrorInvalidSyncStateData, Graph 410) end with every message
// exactly once, read or not, and marked read at the source.
func TestExactlyOnceExchange(t *testing.T) {
	const n = 300
	for _, proto := range []string{"ews", "graph"} {
		t.Run(proto, func(t *testing.T) {
			var srv config.Server
			var mb *exchangetest.Mailbox
			var reset func()
			switch proto {
			case "ews":
				f := exchangetest.NewEWS(t, exchangetest.EWSOptions{Username: testUser, Password: testPassword, PageSize: 7})
				srv = config.Server{Name: "onprem", Protocol: config.ProtocolEWS, EWSURL: f.URL, Username: testUser,
					Auth: config.Auth{Method: config.AuthPassword, PasswordEnv: passwordEnv}}
				mb, reset = f.Mailbox, f.InvalidateSyncStates
			case "graph":
				f := exchangetest.NewGraph(t, exchangetest.GraphOptions{User: "box@example.test", Token: "graph-token", PageSize: 7})
				srv = config.Server{Name: "m365", Protocol: config.ProtocolGraph, GraphURL: f.URL, Mailbox: "box@example.test",
					Auth: config.Auth{Method: config.AuthOAuth2, OAuth: config.OAuth{Provider: config.ProviderCustom, Flow: config.FlowManual,
						ClientID: "app", TokenURL: "http://127.0.0.1:1/token"}}}
				mb, reset = f.Mailbox, f.ExpireDeltaTokens
			}
			srv.FetchInterval = config.Duration(time.Hour)
			srv.SetDefaults()
			for i := 0; i < n; i++ {
				mb.Deliver("inbox", message(i, 3000+i*40), i%5 == 0) // every fifth already read in webmail
			}
			b := startBroker(t)
			cfg := testConfig(t, storagetest.Drivers[0], b.url(), srv)
			ctx := context.Background()
			open := func() *Worker {
				w := openWorker(t, cfg, nil)
				if proto == "graph" {
					if err := w.Tokens().SetToken(ctx, srv, &oauth2.Token{AccessToken: "graph-token"}); err != nil {
						t.Fatal(err)
					}
				}
				return w
			}

			w := open()
			done := make(chan error, 1)
			go func() { done <- w.RunOnce(ctx) }()
			waitFor(t, time.Minute, "the first events", func() bool { return b.count(t) >= 15 })
			b.stop()
			if err := <-done; err == nil {
				t.Log("RunOnce finished before the broker stopped; outage not exercised")
			}
			b.start()
			waitFor(t, time.Minute, "reconnect", func() bool { return w.Publisher().Healthy() })
			if err := w.RunOnce(ctx); err != nil {
				t.Fatalf("RunOnce after the outage: %v", err)
			}
			evs := b.events(t)
			if ids := uniqueIDs(t, evs); len(evs) != n || len(ids) != n {
				t.Fatalf("stream holds %d events (%d unique); want exactly %d", len(evs), len(ids), n)
			}
			w.Close()

			w = open()
			defer w.Close()
			if err := w.RunOnce(ctx); err != nil {
				t.Fatal(err)
			}
			reset()
			if err := w.RunOnce(ctx); err != nil {
				t.Fatalf("RunOnce after the sync state was invalidated: %v", err)
			}
			if got := b.count(t); got != n {
				t.Fatalf("after a restart and a sync reset the stream holds %d events; want %d", got, n)
			}
			for _, m := range mb.Messages("inbox") {
				if !m.IsRead {
					t.Fatalf("message %s not marked read after mark_seen", m.ID)
				}
			}
		})
	}
}
