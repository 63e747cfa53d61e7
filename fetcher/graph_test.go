package fetcher_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/mailworker/mailworker/config"
	"github.com/mailworker/mailworker/fetcher"
	"github.com/mailworker/mailworker/fetcher/exchangetest"
	"github.com/mailworker/mailworker/storage/storagetest"
)

const graphUser = "support@contoso.onmicrosoft.com"

func graphServer(g *exchangetest.Graph) config.Server {
	return config.Server{
		Name: "m365", Protocol: config.ProtocolGraph, GraphURL: g.URL, Mailbox: graphUser,
		Auth:       config.Auth{Method: config.AuthOAuth2},
		AfterFetch: config.AfterFetch{Action: config.ActionMarkSeen},
	}
}

func newGraphFake(t *testing.T, pageSize int) *exchangetest.Graph {
	return exchangetest.NewGraph(t, exchangetest.GraphOptions{User: graphUser, Token: "tok", PageSize: pageSize})
}

func newGraph(t *testing.T, srv config.Server, cps *fetcher.Checkpoints, creds *exCreds) fetcher.Fetcher {
	t.Helper()
	if creds == nil {
		creds = &exCreds{tokens: []string{"tok"}}
	}
	f, err := fetcher.New(srv, fetcher.Deps{Checkpoints: cps, Credentials: creds, Logger: exLogger(t), SpoolDir: t.TempDir()})
	if err != nil {
		t.Fatalf("fetcher.New(%s): %v", srv.Name, err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestGraphFetchPagesExactlyOnce(t *testing.T) {
	storagetest.ForEachDriver(t, func(t *testing.T, db *sqlx.DB) {
		// The first page's 3 downloads must run in parallel.
		fake := exchangetest.NewGraph(t, exchangetest.GraphOptions{User: graphUser, Token: "tok", PageSize: 3, ParallelValues: 3})
		raws, _ := exSeed(fake.Mailbox, "inbox", 8)
		read := exRaw(100)
		fake.Deliver("inbox", read, true) // read by a person: still new
		raws = append(raws, read)
		cps := exCheckpointsDB(db)
		sink := &exchangetest.Sink{}
		st, err := newGraph(t, graphServer(fake), cps, nil).Fetch(exCtx(t), sink)
		if err != nil {
			t.Fatalf("Fetch: %v", err)
		}
		exWantDelivered(t, sink, raws)
		if st.Seen != 9 || st.Delivered != 9 {
			t.Errorf("stats %+v, want 9 seen and delivered", st)
		}
		if n := fake.Count("GET /users/" + graphUser + "/mailFolders/inbox/messages/delta"); n != 3 {
			t.Errorf("%d delta pages, want 3 of 3", n)
		}
		if n := fake.Count("PATCH "); n != 9 {
			t.Errorf("%d PATCH isRead, want 9", n)
		}
		if c := fake.MaxConcurrent(); c > exchangetest.GraphConcurrencyLimit || c < 3 {
			t.Errorf("max concurrent requests %d, want parallel downloads within %d", c, exchangetest.GraphConcurrencyLimit)
		}
		cp, err := cps.Get(exCtx(t), "m365", "inbox")
		if err != nil || !strings.Contains(cp.SyncState, "$deltatoken=") {
			t.Fatalf("checkpoint %q, %v; want the deltaLink", cp.SyncState, err)
		}
		// Restart: nothing new; a deleted message (@removed) is ignored.
		fake.Mailbox.Delete(fake.Messages("inbox")[0].ID)
		sink2 := &exchangetest.Sink{}
		if st, err := newGraph(t, graphServer(fake), cps, nil).Fetch(exCtx(t), sink2); err != nil || st.Delivered != 0 {
			t.Fatalf("restart Fetch = %+v, %v; want nothing new", st, err)
		}
		fresh := exRaw(200)
		fake.Deliver("inbox", fresh, false)
		sink3 := &exchangetest.Sink{}
		if _, err := newGraph(t, graphServer(fake), cps, nil).Fetch(exCtx(t), sink3); err != nil {
			t.Fatalf("third Fetch: %v", err)
		}
		exWantDelivered(t, sink3, [][]byte{fresh})
	})
}

func TestGraphKillMidPage(t *testing.T) {
	fake := newGraphFake(t, 4)
	raws, _ := exSeed(fake.Mailbox, "inbox", 10)
	cps := exCheckpoints(t)
	ctx, cancel := context.WithCancel(exCtx(t))
	defer cancel()
	sink := &exchangetest.Sink{OnDeliver: func(n int) {
		if n == 6 {
			cancel()
		}
	}}
	if _, err := newGraph(t, graphServer(fake), cps, nil).Fetch(ctx, sink); !errors.Is(err, context.Canceled) {
		t.Fatalf("killed Fetch: err = %v, want context.Canceled", err)
	}
	cp, _ := cps.Get(exCtx(t), "m365", "inbox")
	if !strings.Contains(cp.SyncState, "$skiptoken=") {
		t.Fatalf("checkpoint %q, want the nextLink after page 1", cp.SyncState)
	}
	sink2 := &exchangetest.Sink{}
	if _, err := newGraph(t, graphServer(fake), cps, nil).Fetch(exCtx(t), sink2); err != nil {
		t.Fatalf("restart Fetch: %v", err)
	}
	exWantDelivered(t, sink2, raws[4:])
	for i, r := range raws {
		if !sink.Acked(r) && !sink2.Acked(r) {
			t.Errorf("message %d never acknowledged", i)
		}
	}
}

func TestGraphAckFailureStopsWithoutCheckpoint(t *testing.T) {
	fake := newGraphFake(t, 0)
	raws, ids := exSeed(fake.Mailbox, "inbox", 5)
	cps := exCheckpoints(t)
	sink := &exchangetest.Sink{FailAck: func(n int) error {
		if n == 2 {
			return exchangetest.ErrInjected
		}
		return nil
	}}
	if _, err := newGraph(t, graphServer(fake), cps, nil).Fetch(exCtx(t), sink); !errors.Is(err, exchangetest.ErrInjected) {
		t.Fatalf("Fetch: err = %v, want the ack failure", err)
	}
	if m, _ := fake.Get(ids[1]); m.IsRead {
		t.Errorf("unacknowledged message marked read")
	}
	if cp, _ := cps.Get(exCtx(t), "m365", "inbox"); cp.SyncState != "" {
		t.Fatalf("checkpoint %q after a failed ack, want none", cp.SyncState)
	}
	sink2 := &exchangetest.Sink{}
	if _, err := newGraph(t, graphServer(fake), cps, nil).Fetch(exCtx(t), sink2); err != nil {
		t.Fatalf("retry Fetch: %v", err)
	}
	exWantDelivered(t, sink2, raws)
}

func TestGraphAfterFetch(t *testing.T) {
	for _, tc := range []struct {
		action config.AfterFetch
		check  func(t *testing.T, fake *exchangetest.Graph, ids []string)
	}{
		{config.AfterFetch{Action: config.ActionMarkSeen}, func(t *testing.T, fake *exchangetest.Graph, ids []string) {
			for _, id := range ids {
				if m, ok := fake.Get(id); !ok || !m.IsRead {
					t.Errorf("message %s not marked read", id)
				}
			}
		}},
		{config.AfterFetch{Action: config.ActionMove, Folder: "archive"}, func(t *testing.T, fake *exchangetest.Graph, ids []string) {
			if len(fake.Messages("inbox")) != 0 || len(fake.Messages("archive")) != len(ids) {
				t.Errorf("inbox %d, archive %d messages; want all moved", len(fake.Messages("inbox")), len(fake.Messages("archive")))
			}
		}},
		{config.AfterFetch{Action: config.ActionMove, Folder: "Inbox/Done's"}, func(t *testing.T, fake *exchangetest.Graph, ids []string) {
			if len(fake.Messages("inbox")) != 0 || len(fake.Messages("Inbox/Done's")) != len(ids) {
				t.Errorf("inbox %d, Inbox/Done's %d messages; want all moved", len(fake.Messages("inbox")), len(fake.Messages("Inbox/Done's")))
			}
			if n := fake.Count("GET /users/" + graphUser + "/mailFolders/inbox/childFolders"); n != 1 {
				t.Errorf("destination looked up %d times, want once", n)
			}
		}},
		{config.AfterFetch{Action: config.ActionDelete}, func(t *testing.T, fake *exchangetest.Graph, ids []string) {
			if len(fake.Messages("inbox")) != 0 || len(fake.Messages("deleteditems")) != len(ids) {
				t.Errorf("inbox %d, deleteditems %d; want all deleted", len(fake.Messages("inbox")), len(fake.Messages("deleteditems")))
			}
		}},
		{config.AfterFetch{Action: config.ActionNone}, func(t *testing.T, fake *exchangetest.Graph, ids []string) {
			for _, id := range ids {
				if m, ok := fake.Get(id); !ok || m.IsRead {
					t.Errorf("message %s changed", id)
				}
			}
			if n := fake.Count("PATCH ") + fake.Count("POST ") + fake.Count("DELETE "); n != 0 {
				t.Errorf("%d after_fetch requests with none", n)
			}
		}},
	} {
		t.Run(tc.action.String(), func(t *testing.T) {
			fake := newGraphFake(t, 2)
			fake.AddFolder("Inbox/Done's")
			raws, ids := exSeed(fake.Mailbox, "inbox", 3)
			srv := graphServer(fake)
			srv.AfterFetch = tc.action
			cps := exCheckpoints(t)
			sink := &exchangetest.Sink{}
			if _, err := newGraph(t, srv, cps, nil).Fetch(exCtx(t), sink); err != nil {
				t.Fatalf("Fetch: %v", err)
			}
			exWantDelivered(t, sink, raws)
			tc.check(t, fake, ids)
			sink2 := &exchangetest.Sink{}
			if _, err := newGraph(t, srv, cps, nil).Fetch(exCtx(t), sink2); err != nil || len(sink2.Deliveries()) != 0 {
				t.Fatalf("second Fetch: %v, %d deliveries; want none", err, len(sink2.Deliveries()))
			}
		})
	}
}

func TestGraphThrottlingAndTokenRefresh(t *testing.T) {
	fake := newGraphFake(t, 0)
	raws, _ := exSeed(fake.Mailbox, "inbox", 2)
	fake.Throttle(1, 429, "1")
	fake.Throttle(1, 503, "1")
	fake.Throttle(1, 504, "1")
	fake.RotateToken("tok-new")
	creds := &exCreds{tokens: []string{"tok-old", "tok-new"}}
	sink := &exchangetest.Sink{}
	if _, err := newGraph(t, graphServer(fake), exCheckpoints(t), creds).Fetch(exCtx(t), sink); err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	exWantDelivered(t, sink, raws)
	if creds.refreshes() != 1 {
		t.Errorf("%d token refreshes, want 1", creds.refreshes())
	}

	t.Run("token-dead", func(t *testing.T) {
		fake.RotateToken("tok-other")
		_, err := newGraph(t, graphServer(fake), exCheckpoints(t), &exCreds{tokens: []string{"tok-a", "tok-b"}}).Fetch(exCtx(t), &exchangetest.Sink{})
		if !errors.Is(err, fetcher.ErrAuth) || strings.Contains(err.Error(), "tok-") {
			t.Fatalf("Fetch with a refused token: err = %v, want ErrAuth without the token", err)
		}
	})
	t.Run("too-long", func(t *testing.T) {
		fake.RotateToken("tok")
		fake.Throttle(1, 429, "3600")
		_, err := newGraph(t, graphServer(fake), exCheckpoints(t), nil).Fetch(exCtx(t), &exchangetest.Sink{})
		if !errors.Is(err, fetcher.ErrThrottled) {
			t.Fatalf("Fetch with Retry-After 3600: err = %v, want ErrThrottled", err)
		}
	})
}

func TestGraphExpiredDeltaTokenRestarts(t *testing.T) {
	fake := newGraphFake(t, 2)
	raws, _ := exSeed(fake.Mailbox, "inbox", 3)
	srv := graphServer(fake)
	srv.AfterFetch = config.AfterFetch{Action: config.ActionNone}
	cps := exCheckpoints(t)
	sink := &exchangetest.Sink{}
	if _, err := newGraph(t, srv, cps, nil).Fetch(exCtx(t), sink); err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	fake.ExpireDeltaTokens()
	more, _ := exSeed(fake.Mailbox, "inbox", 2)
	if _, err := newGraph(t, srv, cps, nil).Fetch(exCtx(t), sink); err != nil {
		t.Fatalf("Fetch after 410: %v", err)
	}
	if got := len(sink.Deliveries()); got != 8 {
		t.Errorf("%d deliveries, want 3 + 5 after the resync", got)
	}
	if sink.Unique() != len(raws)+len(more) {
		t.Errorf("unique %d, want %d", sink.Unique(), len(raws)+len(more))
	}
}

func TestGraphMessageDeletedBeforeValue(t *testing.T) {
	fake := newGraphFake(t, 0)
	raws, ids := exSeed(fake.Mailbox, "inbox", 3)
	fake.VanishOnFetch(ids[1])
	sink := &exchangetest.Sink{}
	st, err := newGraph(t, graphServer(fake), exCheckpoints(t), nil).Fetch(exCtx(t), sink)
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	exWantDelivered(t, sink, [][]byte{raws[0], raws[2]})
	if st.Seen != 3 || st.Delivered != 2 {
		t.Errorf("stats %+v, want Seen 3 Delivered 2", st)
	}
}

func TestGraphMaxPerFetch(t *testing.T) {
	fake := newGraphFake(t, 0)
	raws, _ := exSeed(fake.Mailbox, "inbox", 7)
	srv := graphServer(fake)
	srv.MaxPerFetch = 3
	cps := exCheckpoints(t)
	sink := &exchangetest.Sink{}
	for run, want := range []struct {
		n    int
		more bool
	}{{3, true}, {3, true}, {1, false}} {
		st, err := newGraph(t, srv, cps, nil).Fetch(exCtx(t), sink)
		if err != nil || st.Delivered != want.n || st.More != want.more {
			t.Fatalf("run %d: %+v, %v; want %d delivered, More %v", run, st, err, want.n, want.more)
		}
	}
	exWantDelivered(t, sink, raws)
}

func TestGraphFolderPath(t *testing.T) {
	fake := newGraphFake(t, 0)
	fake.AddFolder("Support/Level 2")
	raws, _ := exSeed(fake.Mailbox, "Support/Level 2", 2)
	exSeed(fake.Mailbox, "inbox", 1)
	srv := graphServer(fake)
	srv.Folder = "Support/Level 2"
	sink := &exchangetest.Sink{}
	if _, err := newGraph(t, srv, exCheckpoints(t), nil).Fetch(exCtx(t), sink); err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	exWantDelivered(t, sink, raws)
	srv.Folder = "Support/Nope"
	if _, err := newGraph(t, srv, exCheckpoints(t), nil).Fetch(exCtx(t), &exchangetest.Sink{}); !errors.Is(err, fetcher.ErrNoFolder) {
		t.Errorf("Fetch from a missing folder: err = %v, want ErrNoFolder", err)
	}
}

// TestExchangeTLS checks that the server's tls section applies to HTTPS:
// with tls.ca_file the fake's certificate verifies, without it the fetch
// fails on the certificate, not on anything else.
func TestExchangeTLS(t *testing.T) {
	gfake := exchangetest.NewGraph(t, exchangetest.GraphOptions{User: graphUser, Token: "tok", TLS: true})
	efake := exchangetest.NewEWS(t, exchangetest.EWSOptions{Username: ewsUser, Password: ewsPassword, TLS: true})
	for _, tc := range []struct {
		name string
		srv  config.Server
		mb   *exchangetest.Mailbox
		pem  []byte
	}{
		{"graph", graphServer(gfake), gfake.Mailbox, gfake.CertPEM()},
		{"ews", ewsServer(efake), efake.Mailbox, efake.CertPEM()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raws, _ := exSeed(tc.mb, "inbox", 1)
			creds := &exCreds{password: ewsPassword, tokens: []string{"tok"}}
			var x509Err *tls.CertificateVerificationError
			if _, err := newGraphOrEWS(t, tc.srv, creds).Fetch(exCtx(t), &exchangetest.Sink{}); !errors.As(err, &x509Err) {
				t.Fatalf("Fetch without ca_file: err = %v, want a certificate verification error", err)
			}
			ca := filepath.Join(t.TempDir(), "ca.pem")
			if err := os.WriteFile(ca, tc.pem, 0o600); err != nil {
				t.Fatal(err)
			}
			tc.srv.TLS.CAFile = ca
			sink := &exchangetest.Sink{}
			if _, err := newGraphOrEWS(t, tc.srv, creds).Fetch(exCtx(t), sink); err != nil {
				t.Fatalf("Fetch with ca_file: %v", err)
			}
			exWantDelivered(t, sink, raws)
		})
	}
}

func newGraphOrEWS(t *testing.T, srv config.Server, creds *exCreds) fetcher.Fetcher {
	f, err := fetcher.New(srv, fetcher.Deps{Checkpoints: exCheckpoints(t), Credentials: creds, Logger: exLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestGraphDownloadTimeout(t *testing.T) {
	// The fake holds the first $value until a second one arrives, which
	// never happens with one message: the literal timeout must end it.
	fake := exchangetest.NewGraph(t, exchangetest.GraphOptions{User: graphUser, Token: "tok", ParallelValues: 2})
	exSeed(fake.Mailbox, "inbox", 1)
	cps := exCheckpoints(t)
	f, err := fetcher.New(graphServer(fake), fetcher.Deps{Checkpoints: cps, Credentials: &exCreds{tokens: []string{"tok"}},
		Logger: exLogger(t), Timeouts: fetcher.Timeouts{Literal: 200 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Fetch(exCtx(t), &exchangetest.Sink{}); !errors.Is(err, fetcher.ErrTimeout) {
		t.Fatalf("Fetch with a stalled download: err = %v, want ErrTimeout", err)
	}
	if cp, _ := cps.Get(exCtx(t), "m365", "inbox"); cp.SyncState != "" {
		t.Errorf("checkpoint %q after a failed download, want none", cp.SyncState)
	}
}

func TestGraphTestConnection(t *testing.T) {
	fake := newGraphFake(t, 0)
	raws, ids := exSeed(fake.Mailbox, "inbox", 3)
	rep, err := newGraph(t, graphServer(fake), exCheckpoints(t), nil).Test(exCtx(t))
	if err != nil {
		t.Fatalf("Test: %v", err)
	}
	if rep.Messages != 3 || rep.Unseen != 3 || rep.Pending != 3 || rep.AuthMethod != "Bearer" {
		t.Errorf("report %+v, want 3 messages, 3 unseen, 3 pending", rep)
	}
	sample, _ := io.ReadAll(rep.Sample)
	if !bytes.Equal(sample, raws[0]) || rep.SampleRef != "graph:"+ids[0] {
		t.Errorf("sample %s = %.40q…, want the oldest", rep.SampleRef, sample)
	}
	if n := fake.Count("PATCH ") + fake.Count("POST ") + fake.Count("DELETE "); n != 0 {
		t.Errorf("Test changed the mailbox with %d requests", n)
	}
}

func TestGraphDebugTranscriptRedacted(t *testing.T) {
	fake := newGraphFake(t, 0)
	exSeed(fake.Mailbox, "inbox", 1)
	srv := graphServer(fake)
	srv.EmailDebug = true
	log, buf := exBufLogger()
	f, err := fetcher.New(srv, fetcher.Deps{Checkpoints: exCheckpoints(t), Credentials: &exCreds{tokens: []string{"tok"}}, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Fetch(exCtx(t), &exchangetest.Sink{}); err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	out := buf.String()
	for _, want := range []string{"op=delta", "get $value", "mark read", "status=200", "Authorization:[redacted]"} {
		if !strings.Contains(out, want) {
			t.Errorf("debug transcript lacks %q", want)
		}
	}
	for _, secret := range []string{"Bearer tok", "blank pages"} {
		if strings.Contains(out, secret) {
			t.Errorf("debug transcript contains %q", secret)
		}
	}
}
