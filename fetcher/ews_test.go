package fetcher_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/mailworker/mailworker/config"
	"github.com/mailworker/mailworker/fetcher"
	"github.com/mailworker/mailworker/fetcher/exchangetest"
	"github.com/mailworker/mailworker/storage/storagetest"
)

const (
	ewsUser     = `EXAMPLE\helpdesk`
	ewsPassword = "s3cret-Passw0rd"
)

func ewsServer(f *exchangetest.EWS) config.Server {
	return config.Server{
		Name: "exch", Protocol: config.ProtocolEWS, EWSURL: f.URL, Username: ewsUser,
		Auth:       config.Auth{Method: config.AuthPassword},
		AfterFetch: config.AfterFetch{Action: config.ActionMarkSeen},
	}
}

func newEWS(t *testing.T, srv config.Server, cps *fetcher.Checkpoints, creds fetcher.Credentials) fetcher.Fetcher {
	t.Helper()
	if creds == nil {
		creds = &exCreds{password: ewsPassword}
	}
	f, err := fetcher.New(srv, fetcher.Deps{Checkpoints: cps, Credentials: creds, Logger: exLogger(t), SpoolDir: t.TempDir()})
	if err != nil {
		t.Fatalf("fetcher.New(%s): %v", srv.Name, err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestEWSFetchPagesExactlyOnce(t *testing.T) {
	storagetest.ForEachDriver(t, func(t *testing.T, db *sqlx.DB) {
		fake := exchangetest.NewEWS(t, exchangetest.EWSOptions{Username: ewsUser, Password: ewsPassword, PageSize: 3})
		raws, _ := exSeed(fake.Mailbox, "inbox", 7)
		// A message already read by a person is still new to mailworker.
		raws = append(raws, exRaw(100))
		fake.Deliver("inbox", raws[7], true)
		cps := exCheckpointsDB(db)
		sink := &exchangetest.Sink{}
		f := newEWS(t, ewsServer(fake), cps, nil)
		st, err := f.Fetch(exCtx(t), sink)
		if err != nil {
			t.Fatalf("Fetch: %v", err)
		}
		exWantDelivered(t, sink, raws)
		if st.Seen != 8 || st.Delivered != 8 || st.More {
			t.Errorf("Fetch stats = %+v, want Seen 8, Delivered 8", st)
		}
		if n := fake.CountOps("SyncFolderItems"); n < 3 {
			t.Errorf("SyncFolderItems called %d times, want paging (>= 3)", n)
		}
		for _, m := range fake.Messages("inbox") {
			if !m.IsRead {
				t.Errorf("message %s not marked read", m.ID)
			}
		}
		for _, d := range sink.Deliveries() {
			if !strings.HasPrefix(d.Ref, "ews:") || d.Folder != "inbox" {
				t.Errorf("delivery Ref %q Folder %q, want ews:<id> in inbox", d.Ref, d.Folder)
			}
		}
		// Restart: a new fetcher over the same exCheckpoints finds nothing,
		// although the read-flag changes show up in the sync.
		sink2 := &exchangetest.Sink{}
		st, err = newEWS(t, ewsServer(fake), cps, nil).Fetch(exCtx(t), sink2)
		if err != nil || st.Delivered != 0 || len(sink2.Deliveries()) != 0 {
			t.Fatalf("second Fetch = %+v, %v, %d deliveries; want nothing new", st, err, len(sink2.Deliveries()))
		}
		// New mail after the checkpoint is found.
		fresh := exRaw(200)
		fake.Deliver("inbox", fresh, false)
		sink3 := &exchangetest.Sink{}
		if _, err := newEWS(t, ewsServer(fake), cps, nil).Fetch(exCtx(t), sink3); err != nil {
			t.Fatalf("third Fetch: %v", err)
		}
		exWantDelivered(t, sink3, [][]byte{fresh})
	})
}

func TestEWSAuth(t *testing.T) {
	for _, tc := range []struct {
		name   string
		opts   exchangetest.EWSOptions
		method config.AuthMethod
		creds  *exCreds
		imp    string
	}{
		{"basic", exchangetest.EWSOptions{Auth: exchangetest.EWSBasic, Username: ewsUser, Password: ewsPassword},
			config.AuthPassword, &exCreds{password: ewsPassword}, ""},
		{"ntlm", exchangetest.EWSOptions{Auth: exchangetest.EWSNTLM, Username: ewsUser, Password: ewsPassword},
			config.AuthNTLM, &exCreds{password: ewsPassword}, ""},
		{"bearer-impersonation", exchangetest.EWSOptions{Auth: exchangetest.EWSBearer, Token: "tok-2", Impersonate: "support@example.com"},
			config.AuthOAuth2, &exCreds{tokens: []string{"tok-1-expired", "tok-2"}}, "support@example.com"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake := exchangetest.NewEWS(t, tc.opts)
			raws, _ := exSeed(fake.Mailbox, "inbox", 2)
			srv := ewsServer(fake)
			srv.Auth.Method = tc.method
			srv.Impersonate = tc.imp
			sink := &exchangetest.Sink{}
			if _, err := newEWS(t, srv, exCheckpoints(t), tc.creds).Fetch(exCtx(t), sink); err != nil {
				t.Fatalf("Fetch: %v", err)
			}
			exWantDelivered(t, sink, raws)
			if tc.method == config.AuthOAuth2 && tc.creds.refreshes() != 1 {
				t.Errorf("token refreshed %d times, want 1 (after the first 401)", tc.creds.refreshes())
			}
		})
	}
	t.Run("wrong-password", func(t *testing.T) {
		for _, m := range []config.AuthMethod{config.AuthPassword, config.AuthNTLM} {
			auth := exchangetest.EWSBasic
			if m == config.AuthNTLM {
				auth = exchangetest.EWSNTLM
			}
			fake := exchangetest.NewEWS(t, exchangetest.EWSOptions{Auth: auth, Username: ewsUser, Password: ewsPassword})
			srv := ewsServer(fake)
			srv.Auth.Method = m
			_, err := newEWS(t, srv, exCheckpoints(t), &exCreds{password: "wrong"}).Fetch(exCtx(t), &exchangetest.Sink{})
			if !errors.Is(err, fetcher.ErrAuth) {
				t.Fatalf("%s with a wrong password: err = %v, want ErrAuth", m, err)
			}
			if strings.Contains(err.Error(), "wrong") {
				t.Errorf("error %q reveals the password", err)
			}
			if want := "server offers " + map[config.AuthMethod]string{config.AuthPassword: "Basic", config.AuthNTLM: "NTLM, Negotiate"}[m]; !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not say %q", err, want)
			}
		}
	})
}

func TestEWSAfterFetch(t *testing.T) {
	for _, tc := range []struct {
		action config.AfterFetch
		check  func(t *testing.T, fake *exchangetest.EWS, ids []string)
	}{
		{config.AfterFetch{Action: config.ActionMarkSeen}, func(t *testing.T, fake *exchangetest.EWS, ids []string) {
			for _, id := range ids {
				if m, ok := fake.Get(id); !ok || !m.IsRead {
					t.Errorf("message %s: IsRead %v (present %v), want read", id, m.IsRead, ok)
				}
			}
		}},
		{config.AfterFetch{Action: config.ActionMove, Folder: "Inbox/Processed"}, func(t *testing.T, fake *exchangetest.EWS, ids []string) {
			if n := len(fake.Messages("inbox")); n != 0 {
				t.Errorf("inbox holds %d messages after move, want 0", n)
			}
			if n := len(fake.Messages("Inbox/Processed")); n != len(ids) {
				t.Errorf("Inbox/Processed holds %d messages, want %d", n, len(ids))
			}
			if n := fake.CountOps("FindFolder"); n != 1 {
				t.Errorf("FindFolder called %d times, want 1 (destination cached)", n)
			}
		}},
		{config.AfterFetch{Action: config.ActionDelete}, func(t *testing.T, fake *exchangetest.EWS, ids []string) {
			if n := len(fake.Messages("inbox")); n != 0 {
				t.Errorf("inbox holds %d messages after delete, want 0", n)
			}
			if n := len(fake.Messages("deleteditems")); n != len(ids) {
				t.Errorf("Deleted Items holds %d messages, want %d", n, len(ids))
			}
		}},
		{config.AfterFetch{Action: config.ActionNone}, func(t *testing.T, fake *exchangetest.EWS, ids []string) {
			for _, id := range ids {
				if m, ok := fake.Get(id); !ok || m.IsRead {
					t.Errorf("message %s changed (present %v, read %v), want untouched", id, ok, m.IsRead)
				}
			}
			if n := fake.CountOps("UpdateItem") + fake.CountOps("MoveItem") + fake.CountOps("DeleteItem"); n != 0 {
				t.Errorf("%d after_fetch operations with after_fetch none", n)
			}
		}},
	} {
		t.Run(tc.action.String(), func(t *testing.T) {
			fake := exchangetest.NewEWS(t, exchangetest.EWSOptions{Username: ewsUser, Password: ewsPassword})
			fake.AddFolder("Inbox/Processed")
			raws, ids := exSeed(fake.Mailbox, "inbox", 3)
			srv := ewsServer(fake)
			srv.AfterFetch = tc.action
			cps := exCheckpoints(t)
			sink := &exchangetest.Sink{}
			if _, err := newEWS(t, srv, cps, nil).Fetch(exCtx(t), sink); err != nil {
				t.Fatalf("Fetch: %v", err)
			}
			exWantDelivered(t, sink, raws)
			tc.check(t, fake, ids)
			// Moves and deletes show up as Delete changes: nothing new.
			sink2 := &exchangetest.Sink{}
			if _, err := newEWS(t, srv, cps, nil).Fetch(exCtx(t), sink2); err != nil || len(sink2.Deliveries()) != 0 {
				t.Fatalf("second Fetch: %v, %d deliveries, want none", err, len(sink2.Deliveries()))
			}
		})
	}
}

func TestEWSKillMidPage(t *testing.T) {
	fake := exchangetest.NewEWS(t, exchangetest.EWSOptions{Username: ewsUser, Password: ewsPassword, PageSize: 4})
	raws, _ := exSeed(fake.Mailbox, "inbox", 10)
	cps := exCheckpoints(t)
	ctx, cancel := context.WithCancel(exCtx(t))
	defer cancel()
	// The 6th delivery (2nd of page 2) is killed before its ack.
	sink := &exchangetest.Sink{OnDeliver: func(n int) {
		if n == 6 {
			cancel()
		}
	}}
	_, err := newEWS(t, ewsServer(fake), cps, nil).Fetch(ctx, sink)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("killed Fetch: err = %v, want context.Canceled", err)
	}
	if sink.Acked(raws[5]) {
		t.Fatalf("6th message acknowledged although its run was killed")
	}
	// Page 1 (4 messages) is checkpointed, page 2 is not: the restart
	// delivers from the 5th message, including the 5th again.
	sink2 := &exchangetest.Sink{}
	if _, err := newEWS(t, ewsServer(fake), cps, nil).Fetch(exCtx(t), sink2); err != nil {
		t.Fatalf("restart Fetch: %v", err)
	}
	exWantDelivered(t, sink2, raws[4:])
	for i, r := range raws {
		if !sink.Acked(r) && !sink2.Acked(r) {
			t.Errorf("message %d never acknowledged", i)
		}
	}
}

func TestEWSAckFailureStopsWithoutCheckpoint(t *testing.T) {
	fake := exchangetest.NewEWS(t, exchangetest.EWSOptions{Username: ewsUser, Password: ewsPassword})
	raws, ids := exSeed(fake.Mailbox, "inbox", 5)
	cps := exCheckpoints(t)
	sink := &exchangetest.Sink{FailAck: func(n int) error {
		if n == 3 {
			return exchangetest.ErrInjected
		}
		return nil
	}}
	st, err := newEWS(t, ewsServer(fake), cps, nil).Fetch(exCtx(t), sink)
	if !errors.Is(err, exchangetest.ErrInjected) {
		t.Fatalf("Fetch: err = %v, want the ack failure", err)
	}
	if st.Delivered != 2 || len(sink.Deliveries()) != 3 {
		t.Errorf("stats %+v, %d deliveries; want 2 delivered of 3 attempted", st, len(sink.Deliveries()))
	}
	if m, _ := fake.Get(ids[2]); m.IsRead {
		t.Errorf("unacknowledged message marked read")
	}
	if cp, err := cps.Get(exCtx(t), "exch", "inbox"); err != nil || cp.SyncState != "" {
		t.Fatalf("checkpoint after failed ack = %+v, %v; want none", cp, err)
	}
	// NATS is back: everything is delivered again; the ledger dedupes.
	sink2 := &exchangetest.Sink{}
	if _, err := newEWS(t, ewsServer(fake), cps, nil).Fetch(exCtx(t), sink2); err != nil {
		t.Fatalf("retry Fetch: %v", err)
	}
	exWantDelivered(t, sink2, raws)
}

func TestEWSThrottling(t *testing.T) {
	fake := exchangetest.NewEWS(t, exchangetest.EWSOptions{Username: ewsUser, Password: ewsPassword})
	raws, _ := exSeed(fake.Mailbox, "inbox", 2)
	fake.ServerBusy("SyncFolderItems", 1, 20*time.Millisecond, false) // SOAP fault in HTTP 500
	fake.ServerBusy("SyncFolderItems", 1, 20*time.Millisecond, true)  // in a 200 response message
	fake.ServerBusy("GetItem", 1, 20*time.Millisecond, true)          // in the streamed GetItem
	fake.ServerBusy("UpdateItem", 1, 20*time.Millisecond, false)
	fake.HTTPThrottle(1, 503, "1") // IIS queue full
	fake.HTTPThrottle(1, 429, "1")
	sink := &exchangetest.Sink{}
	if _, err := newEWS(t, ewsServer(fake), exCheckpoints(t), nil).Fetch(exCtx(t), sink); err != nil {
		t.Fatalf("Fetch under throttling: %v", err)
	}
	exWantDelivered(t, sink, raws)
	if got, want := fake.CountOps("GetItem"), 3; got != want {
		t.Errorf("GetItem served %d times, want %d (one retry)", got, want)
	}

	t.Run("too-long", func(t *testing.T) {
		fake.ServerBusy("", 1, 30*time.Minute, false)
		_, err := newEWS(t, ewsServer(fake), exCheckpoints(t), nil).Fetch(exCtx(t), &exchangetest.Sink{})
		if !errors.Is(err, fetcher.ErrThrottled) {
			t.Fatalf("Fetch with a 30 min back-off: err = %v, want ErrThrottled", err)
		}
	})
	t.Run("ctx", func(t *testing.T) {
		fake.ServerBusy("", 1, time.Minute, false)
		ctx, cancel := context.WithCancel(exCtx(t))
		sink := &exchangetest.Sink{}
		start := fake.CountOps("SyncFolderItems")
		go func() {
			// Cancel once the throttled call has been answered.
			for fake.CountOps("SyncFolderItems") == start {
				select {
				case <-ctx.Done():
					return
				case <-time.After(5 * time.Millisecond):
				}
			}
			cancel()
		}()
		_, err := newEWS(t, ewsServer(fake), exCheckpoints(t), nil).Fetch(ctx, sink)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Fetch cancelled during a back-off: err = %v, want context.Canceled", err)
		}
	})
}

func TestEWSInvalidSyncStateRestarts(t *testing.T) {
	fake := exchangetest.NewEWS(t, exchangetest.EWSOptions{Username: ewsUser, Password: ewsPassword})
	raws, _ := exSeed(fake.Mailbox, "inbox", 3)
	srv := ewsServer(fake)
	srv.AfterFetch = config.AfterFetch{Action: config.ActionNone}
	cps := exCheckpoints(t)
	sink := &exchangetest.Sink{}
	if _, err := newEWS(t, srv, cps, nil).Fetch(exCtx(t), sink); err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	fake.InvalidateSyncStates()
	more, _ := exSeed(fake.Mailbox, "inbox", 2)
	if _, err := newEWS(t, srv, cps, nil).Fetch(exCtx(t), sink); err != nil {
		t.Fatalf("Fetch after sync state loss: %v", err)
	}
	// Everything is delivered again; the sink (ledger) keeps one of each.
	if got := len(sink.Deliveries()); got != 8 {
		t.Errorf("%d deliveries, want 3 + 5 after the resync", got)
	}
	if sink.Unique() != len(raws)+len(more) {
		t.Errorf("unique messages %d, want %d", sink.Unique(), len(raws)+len(more))
	}
}

func TestEWSItemDeletedBeforeGetItem(t *testing.T) {
	fake := exchangetest.NewEWS(t, exchangetest.EWSOptions{Username: ewsUser, Password: ewsPassword})
	raws, ids := exSeed(fake.Mailbox, "inbox", 3)
	fake.VanishOnFetch(ids[1])
	cps := exCheckpoints(t)
	sink := &exchangetest.Sink{}
	st, err := newEWS(t, ewsServer(fake), cps, nil).Fetch(exCtx(t), sink)
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	exWantDelivered(t, sink, [][]byte{raws[0], raws[2]})
	if st.Seen != 3 || st.Delivered != 2 {
		t.Errorf("stats %+v, want Seen 3 Delivered 2", st)
	}
	if cp, _ := cps.Get(exCtx(t), "exch", "inbox"); cp.SyncState == "" {
		t.Errorf("checkpoint not stored after a skipped message")
	}
}

func TestEWSFaultIsTypedError(t *testing.T) {
	fake := exchangetest.NewEWS(t, exchangetest.EWSOptions{Username: ewsUser, Password: ewsPassword})
	exSeed(fake.Mailbox, "inbox", 1)
	fake.Fault("SyncFolderItems", "ErrorMailboxStoreUnavailable")
	_, err := newEWS(t, ewsServer(fake), exCheckpoints(t), nil).Fetch(exCtx(t), &exchangetest.Sink{})
	var ee *fetcher.EWSError
	if !errors.As(err, &ee) || ee.Code != "ErrorMailboxStoreUnavailable" || ee.Operation != "SyncFolderItems" || ee.HTTP != 500 {
		t.Fatalf("Fetch: err = %#v, want *EWSError ErrorMailboxStoreUnavailable from SyncFolderItems", err)
	}
	if !strings.Contains(err.Error(), "exch") {
		t.Errorf("error %q does not name the server", err)
	}
}

func TestEWSFolderPathAndLargeMessage(t *testing.T) {
	fake := exchangetest.NewEWS(t, exchangetest.EWSOptions{Username: ewsUser, Password: ewsPassword})
	fake.AddFolder("Inbox/Support")
	// 6 MB: above spool.DefaultMemLimit, so the spool goes to a file.
	big := append(exRaw(1), bytes.Repeat([]byte("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ+/\r\n"), 6<<20/66)...)
	fake.Deliver("Inbox/Support", big, false)
	fake.Deliver("inbox", exRaw(2), false) // not in the fetched folder
	srv := ewsServer(fake)
	srv.Folder = "Inbox/Support"
	sink := &exchangetest.Sink{}
	st, err := newEWS(t, srv, exCheckpoints(t), nil).Fetch(exCtx(t), sink)
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	exWantDelivered(t, sink, [][]byte{big})
	if st.Bytes != int64(len(big)) {
		t.Errorf("Bytes = %d, want %d", st.Bytes, len(big))
	}
	srv.Folder = "Inbox/Nope"
	_, err = newEWS(t, srv, exCheckpoints(t), nil).Fetch(exCtx(t), &exchangetest.Sink{})
	if !errors.Is(err, fetcher.ErrNoFolder) {
		t.Errorf("Fetch from a missing folder: err = %v, want ErrNoFolder", err)
	}
}

func TestEWSMaxPerFetch(t *testing.T) {
	fake := exchangetest.NewEWS(t, exchangetest.EWSOptions{Username: ewsUser, Password: ewsPassword})
	raws, _ := exSeed(fake.Mailbox, "inbox", 7)
	srv := ewsServer(fake)
	srv.MaxPerFetch = 3
	cps := exCheckpoints(t)
	sink := &exchangetest.Sink{}
	for run, want := range []struct {
		n    int
		more bool
	}{{3, true}, {3, true}, {1, false}} {
		st, err := newEWS(t, srv, cps, nil).Fetch(exCtx(t), sink)
		if err != nil || st.Delivered != want.n || st.More != want.more {
			t.Fatalf("run %d: %+v, %v; want %d delivered, More %v", run, st, err, want.n, want.more)
		}
	}
	exWantDelivered(t, sink, raws)
}

func TestEWSTestConnection(t *testing.T) {
	fake := exchangetest.NewEWS(t, exchangetest.EWSOptions{Username: ewsUser, Password: ewsPassword})
	raws, ids := exSeed(fake.Mailbox, "inbox", 3)
	fake.Mailbox.Delete(ids[2])
	f := newEWS(t, ewsServer(fake), exCheckpoints(t), nil)
	rep, err := f.Test(exCtx(t))
	if err != nil {
		t.Fatalf("Test: %v", err)
	}
	if rep.Messages != 2 || rep.Unseen != 2 || rep.Pending != 2 || rep.AuthMethod != "Basic" {
		t.Errorf("report %+v, want 2 messages, 2 unseen, 2 pending, Basic", rep)
	}
	if len(rep.Capabilities) == 0 || !strings.Contains(rep.Capabilities[0], "15.1.2507.6") {
		t.Errorf("capabilities %q, want the server version", rep.Capabilities)
	}
	sample, _ := io.ReadAll(rep.Sample)
	if !bytes.Equal(sample, raws[0]) || rep.SampleRef != "ews:"+ids[0] {
		t.Errorf("sample %s = %.40q…, want the oldest message %s", rep.SampleRef, sample, ids[0])
	}
	for _, op := range []string{"UpdateItem", "MoveItem", "DeleteItem", "SyncFolderItems"} {
		if n := fake.CountOps(op); n != 0 {
			t.Errorf("Test called %s %d times, want a read-only test", op, n)
		}
	}
	if m, _ := fake.Get(ids[0]); m.IsRead {
		t.Errorf("Test marked the sample read")
	}
}

func TestEWSDebugTranscriptRedacted(t *testing.T) {
	fake := exchangetest.NewEWS(t, exchangetest.EWSOptions{Username: ewsUser, Password: ewsPassword})
	exSeed(fake.Mailbox, "inbox", 1)
	srv := ewsServer(fake)
	srv.EmailDebug = true
	log, buf := exBufLogger()
	f, err := fetcher.New(srv, fetcher.Deps{Checkpoints: exCheckpoints(t), Credentials: &exCreds{password: ewsPassword}, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Fetch(exCtx(t), &exchangetest.Sink{}); err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	out := buf.String()
	for _, want := range []string{"SyncFolderItems", "GetItem", "UpdateItem", "status=200", "Authorization:[redacted]"} {
		if !strings.Contains(out, want) {
			t.Errorf("debug transcript lacks %q", want)
		}
	}
	for _, secret := range []string{ewsPassword, "Printer 0", "blank pages"} {
		if strings.Contains(out, secret) {
			t.Errorf("debug transcript contains %q", secret)
		}
	}
}
