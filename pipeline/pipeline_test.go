package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mailworker/mailworker/config"
	"github.com/mailworker/mailworker/fetcher"
	"github.com/mailworker/mailworker/publisher"
	"github.com/mailworker/mailworker/spool"
	"github.com/mailworker/mailworker/storage/storagetest"
)

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// countingPublisher forwards to the real publisher and counts publishes,
// to tell "not published at all" from "dropped by JetStream dedupe".
type countingPublisher struct {
	*publisher.Publisher
	n atomic.Int64
}

func (c *countingPublisher) PublishAsync(ctx context.Context, subject string, ev *publisher.Event) (*publisher.Future, error) {
	c.n.Add(1)
	return c.Publisher.PublishAsync(ctx, subject, ev)
}

type env struct {
	db   *sqlx.DB
	js   jetstream.JetStream
	pub  *countingPublisher
	p    *Pipeline
	dir  string
	emb  *publisher.Embedded
	nc   *nats.Conn
	ncfg config.NATS
}

func newEnv(t testing.TB, db *sqlx.DB, listen bool) *env {
	t.Helper()
	logger := testLogger(t)
	dir := t.TempDir()
	var opts []publisher.EmbeddedOption
	if listen {
		opts = append(opts, publisher.WithListen("127.0.0.1:0"))
	}
	emb, err := publisher.StartEmbedded(dir, logger, opts...)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{db: db, dir: dir, emb: emb}
	t.Cleanup(func() { e.emb.Shutdown() })
	ctx := context.Background()
	if listen {
		e.ncfg.URL = emb.URL()
		e.nc, err = publisher.Connect(ctx, e.ncfg, nil, logger)
		if err == nil {
			t.Cleanup(e.nc.Close)
		}
	} else {
		e.nc, err = publisher.Connect(ctx, e.ncfg, emb, logger)
	}
	if err != nil {
		t.Fatal(err)
	}
	p, err := publisher.New(ctx, e.nc, e.ncfg, logger, publisher.WithAckTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	e.js = p.JetStream()
	e.pub = &countingPublisher{Publisher: p}
	e.p = New(Deps{DB: db, Publisher: e.pub, DataDir: dir, Logger: logger})
	return e
}

func deliver(t testing.TB, sink fetcher.Sink, ref, raw string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ack, err := sink.Deliver(ctx, &fetcher.Message{Server: "s1", Folder: "INBOX", Ref: ref, Body: spool.FromBytes([]byte(raw))})
	if err != nil {
		return err
	}
	return ack.Wait(ctx)
}

// lastEvent returns the newest event on subject, failing when there is none.
func lastEvent(t testing.TB, js jetstream.JetStream, subject string) *publisher.Event {
	t.Helper()
	ctx := context.Background()
	s, err := js.Stream(ctx, publisher.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetLastMsgForSubject(ctx, subject)
	if err != nil {
		t.Fatalf("last message on %s: %v", subject, err)
	}
	var ev publisher.Event
	if err := json.Unmarshal(m.Data, &ev); err != nil {
		t.Fatal(err)
	}
	return &ev
}

func streamMsgs(t testing.TB, js jetstream.JetStream) uint64 {
	t.Helper()
	n, err := publisher.Pending(context.Background(), js, publisher.DefaultStream, "")
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func mail(from, msgid, subject string, extra ...string) string {
	h := fmt.Sprintf("From: %s\r\nTo: help@example.com\r\nMessage-ID: <%s>\r\nSubject: %s\r\nDate: Tue, 24 Nov 2026 10:00:00 +0000\r\n", from, msgid, subject)
	for _, x := range extra {
		h += x + "\r\n"
	}
	return h + "Content-Type: text/plain; charset=utf-8\r\n\r\nHello " + msgid + "\r\n"
}

const bounce = "From: MAILER-DAEMON@example.com\r\nTo: help@example.com\r\nMessage-ID: <dsn1@example.com>\r\n" +
	"Subject: Undelivered Mail\r\nMIME-Version: 1.0\r\n" +
	"Content-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n" +
	"--b\r\nContent-Type: text/plain\r\n\r\nCould not deliver.\r\n" +
	"--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.com\r\n\r\n" +
	"Final-Recipient: rfc822; gone@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n" +
	"--b--\r\n"

func TestClassifyAndSubjects(t *testing.T) {
	storagetest.ForEachDriver(t, func(t *testing.T, db *sqlx.DB) {
		e := newEnv(t, db, false)
		sink := e.p.ForServer(config.Server{Name: "s1", Addresses: []string{"Help@Example.com"}, EmailDebug: true}, nil)
		for _, tc := range []struct {
			name, raw, subject string
			kind               publisher.Kind
		}{
			{"new", mail("a@cust.com", "root@cust.com", "Printer broken"), "mail.s1.request", publisher.KindNewRequest},
			{"reply via in_reply_to", mail("a@cust.com", "r1@cust.com", "Re: Printer", "In-Reply-To: <root@cust.com>"), "mail.s1.reply", publisher.KindReply},
			{"reply via references", mail("b@cust.com", "r2@cust.com", "Re: Printer", "References: <x@y> <root@cust.com>"), "mail.s1.reply", publisher.KindReply},
			{"unknown thread", mail("c@cust.com", "r3@cust.com", "Re: other", "In-Reply-To: <nobody@cust.com>"), "mail.s1.request", publisher.KindNewRequest},
			{"ticket ref", mail("d@cust.com", "t1@cust.com", "Re: [#123] Printer"), "mail.s1.reply", publisher.KindReply},
			{"auto reply", mail("e@cust.com", "o1@cust.com", "Out of office", "Auto-Submitted: auto-replied"), "mail.s1.auto", publisher.KindAutoReply},
			{"bounce", bounce, "mail.s1.auto", publisher.KindBounce},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if err := deliver(t, sink, "imap:1:"+tc.name, tc.raw); err != nil {
					t.Fatalf("deliver: %v", err)
				}
				ev := lastEvent(t, e.js, tc.subject)
				if ev.Kind != tc.kind || ev.Server != "s1" || ev.Mailbox != "help@example.com" || ev.Source != "imap:1:"+tc.name {
					t.Fatalf("event on %s = kind %s server %s mailbox %s source %s; want kind %s", tc.subject, ev.Kind, ev.Server, ev.Mailbox, ev.Source, tc.kind)
				}
				if ev.ID != publisher.EventID("s1", "help@example.com", ev.Raw.SHA256) {
					t.Fatalf("event id %s is not EventID(server, mailbox, sha)", ev.ID)
				}
				var st, kind string
				if err := db.QueryRowx(db.Rebind(`SELECT status, kind FROM pipeline_ledger WHERE event_id = ?`), ev.ID).Scan(&st, &kind); err != nil {
					t.Fatalf("ledger row: %v", err)
				}
				if st != StatusPublished || kind != string(tc.kind) {
					t.Fatalf("ledger = %s %s, want published %s", st, kind, tc.kind)
				}
			})
		}
		if n := streamMsgs(t, e.js); n != 7 {
			t.Fatalf("stream holds %d events, want 7", n)
		}
	})
}

func TestDisableNewRequests(t *testing.T) {
	storagetest.ForEachDriver(t, func(t *testing.T, db *sqlx.DB) {
		e := newEnv(t, db, false)
		sink := e.p.ForServer(config.Server{Name: "s1", Username: "help", DisableNewRequests: true,
			NewRequestAllow: []string{"Boss@Example.com", "*@partner.org"}}, nil)
		for _, tc := range []struct {
			name, raw, subject string
			suppressed         bool
		}{
			{"stranger", mail("x@stranger.net", "n1@stranger.net", "Help"), "mail.s1.suppressed", true},
			{"exact allow", mail("boss@example.COM", "n2@example.com", "Help"), "mail.s1.request", false},
			{"domain allow", mail("anyone@Partner.org", "n3@partner.org", "Help"), "mail.s1.request", false},
			{"subdomain not allowed", mail("x@sub.partner.org", "n4@partner.org", "Help"), "mail.s1.suppressed", true},
			{"reply still flows", mail("x@stranger.net", "n5@stranger.net", "Re: [#7] Help"), "mail.s1.reply", false},
			{"reply to suppressed thread", mail("x@stranger.net", "n6@stranger.net", "Re: Help", "In-Reply-To: <n1@stranger.net>"), "mail.s1.reply", false},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if err := deliver(t, sink, tc.name, tc.raw); err != nil {
					t.Fatal(err)
				}
				ev := lastEvent(t, e.js, tc.subject)
				if ev.Suppressed != tc.suppressed || ev.Source != tc.name {
					t.Fatalf("event on %s: suppressed %v source %s; want %v %s", tc.subject, ev.Suppressed, ev.Source, tc.suppressed, tc.name)
				}
			})
		}
		st, err := e.p.Status(context.Background())
		if err != nil || len(st) != 1 {
			t.Fatalf("Status = %v, %v", st, err)
		}
		if st[0].Suppressed != 2 || st[0].Published != 4 || st[0].Fetched != 6 {
			t.Fatalf("counters = %+v, want suppressed 2 published 4 fetched 6", st[0])
		}
	})
}

func TestDuplicateRawNotPublished(t *testing.T) {
	storagetest.ForEachDriver(t, func(t *testing.T, db *sqlx.DB) {
		e := newEnv(t, db, false)
		sink := e.p.ForServer(config.Server{Name: "s1", Username: "help"}, nil)
		raw := mail("a@cust.com", "dup@cust.com", "Hello")
		if err := deliver(t, sink, "imap:1:5", raw); err != nil {
			t.Fatal(err)
		}
		// The same bytes again after a UIDVALIDITY reset: new ref.
		if err := deliver(t, sink, "imap:2:1", raw); err != nil {
			t.Fatal(err)
		}
		if n := e.pub.n.Load(); n != 1 {
			t.Fatalf("published %d times, want 1", n)
		}
		if n := streamMsgs(t, e.js); n != 1 {
			t.Fatalf("stream holds %d, want 1", n)
		}
		var rows int
		if err := db.Get(&rows, `SELECT COUNT(*) FROM pipeline_ledger`); err != nil || rows != 1 {
			t.Fatalf("ledger rows = %d, %v; want 1", rows, err)
		}
		st, _ := e.p.Status(context.Background())
		if len(st) != 1 || st[0].Duplicates != 1 || st[0].Published != 1 || st[0].Fetched != 2 {
			t.Fatalf("state = %+v, want duplicates 1 published 1 fetched 2", st)
		}
		// Another server is a different mailbox: not a duplicate.
		other := e.p.ForServer(config.Server{Name: "s2", Username: "other"}, nil)
		if err := deliver(t, other, "imap:1:1", raw); err != nil {
			t.Fatal(err)
		}
		if n := streamMsgs(t, e.js); n != 2 {
			t.Fatalf("stream holds %d after second server, want 2", n)
		}
	})
}

func TestFailedMailAndRetry(t *testing.T) {
	storagetest.ForEachDriver(t, func(t *testing.T, db *sqlx.DB) {
		e := newEnv(t, db, false)
		ctx := context.Background()
		sink := e.p.ForServer(config.Server{Name: "s1", Username: "help"}, nil)
		raw := "\r\n" // no header, no body: parser.ErrEmpty
		if err := deliver(t, sink, "imap:1:9", raw); err != nil {
			t.Fatalf("deliver of unparseable mail = %v, want nil (it is not an error)", err)
		}
		ev := lastEvent(t, e.js, "mail.s1.failed")
		if ev.Kind != publisher.KindFailed || ev.Error == nil || ev.Error.Code != CodeEmpty || ev.Message != nil {
			t.Fatalf("failed event = %+v", ev)
		}
		base := publisher.EventID("s1", "help", ev.Raw.SHA256)
		if ev.ID != base+FailedIDSuffix || ev.Raw.Object != filepath.Join("failed", ev.Raw.SHA256+".eml") {
			t.Fatalf("failed event id %s object %s", ev.ID, ev.Raw.Object)
		}
		kept, err := os.ReadFile(filepath.Join(e.dir, ev.Raw.Object))
		if err != nil || string(kept) != raw {
			t.Fatalf("raw copy = %q, %v; want %q", kept, err, raw)
		}
		fs, err := e.p.ListFailed(ctx, "s1")
		if err != nil || len(fs) != 1 || fs[0].EventID != base || fs[0].Status != FailedPending {
			t.Fatalf("ListFailed = %+v, %v", fs, err)
		}
		// Delivered again: the ledger knows it, nothing new is published.
		if err := deliver(t, sink, "imap:1:9", raw); err != nil {
			t.Fatal(err)
		}
		if n := e.pub.n.Load(); n != 1 {
			t.Fatalf("published %d times, want 1", n)
		}

		res, err := e.p.Retry(ctx, "")
		if err != nil || len(res) != 1 || res[0].Err == nil {
			t.Fatalf("Retry of still-broken mail = %+v, %v; want one result with an error", res, err)
		}
		// Simulate a parser fix: the kept raw now parses.
		if err := os.WriteFile(filepath.Join(e.dir, ev.Raw.Object), []byte(mail("a@cust.com", "fixed@cust.com", "Now parses")), 0o600); err != nil {
			t.Fatal(err)
		}
		res, err = e.p.Retry(ctx, ev.ID) // the failed event's id works too
		if err != nil || len(res) != 1 || res[0].Err != nil || res[0].Kind != publisher.KindNewRequest {
			t.Fatalf("Retry = %+v, %v", res, err)
		}
		full := lastEvent(t, e.js, "mail.s1.request")
		if full.ID != base || full.MessageID != "fixed@cust.com" || full.Source != "imap:1:9" {
			t.Fatalf("retried event id %s msgid %s source %s; want id %s", full.ID, full.MessageID, full.Source, base)
		}
		fs, _ = e.p.ListFailed(ctx, "")
		if len(fs) != 1 || fs[0].Status != FailedRetried || fs[0].Attempts != 3 {
			t.Fatalf("after retry ListFailed = %+v", fs)
		}
		var st string
		if err := db.Get(&st, db.Rebind(`SELECT status FROM pipeline_ledger WHERE event_id = ?`), base); err != nil || st != StatusPublished {
			t.Fatalf("ledger status = %q, %v", st, err)
		}
		if _, err := e.p.Retry(ctx, base); !errors.Is(err, ErrNotFound) {
			t.Fatalf("second Retry = %v, want ErrNotFound", err)
		}
	})
}

func TestNATSDownThenRestarted(t *testing.T) {
	storagetest.ForEachDriver(t, func(t *testing.T, db *sqlx.DB) {
		e := newEnv(t, db, true)
		sink := e.p.ForServer(config.Server{Name: "s1", Username: "help"}, nil)
		if err := deliver(t, sink, "u1", mail("a@cust.com", "m1@cust.com", "one")); err != nil {
			t.Fatal(err)
		}
		url := e.emb.URL()
		e.emb.Shutdown()
		start := time.Now()
		err := deliver(t, sink, "u2", mail("a@cust.com", "m2@cust.com", "two"))
		if !errors.Is(err, publisher.ErrNotConnected) {
			t.Fatalf("deliver while NATS is down = %v, want ErrNotConnected", err)
		}
		if d := time.Since(start); d > 20*time.Second {
			t.Fatalf("deliver while down took %v", d)
		}
		var rows int
		if err := db.Get(&rows, `SELECT COUNT(*) FROM pipeline_ledger`); err != nil || rows != 1 {
			t.Fatalf("ledger rows = %d, %v; want 1 (nothing recorded while down)", rows, err)
		}

		emb, err := publisher.StartEmbedded(e.dir, testLogger(t), publisher.WithListen(strings.TrimPrefix(url, "nats://")))
		if err != nil {
			t.Fatal(err)
		}
		e.emb = emb
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := e.pub.WaitConnected(ctx); err != nil {
			t.Fatal(err)
		}
		err = deliver(t, sink, "u2", mail("a@cust.com", "m2@cust.com", "two"))
		if err != nil {
			t.Fatalf("deliver after restart: %v", err)
		}
		if n := streamMsgs(t, e.js); n != 2 {
			t.Fatalf("stream holds %d after restart, want 2", n)
		}
	})
}

func TestRecordRunAndStatus(t *testing.T) {
	storagetest.ForEachDriver(t, func(t *testing.T, db *sqlx.DB) {
		p := New(Deps{DB: db, Logger: testLogger(t)})
		ctx := context.Background()
		t0 := time.Date(2026, 11, 25, 6, 0, 0, 0, time.UTC)
		if err := p.RecordRun(ctx, "s1", t0, t0.Add(5*time.Minute), nil); err != nil {
			t.Fatal(err)
		}
		if err := p.RecordRun(ctx, "s1", t0.Add(5*time.Minute), t0.Add(10*time.Minute), errors.New("imap dial: refused")); err != nil {
			t.Fatal(err)
		}
		st, err := p.Status(ctx)
		if err != nil || len(st) != 1 {
			t.Fatalf("Status = %+v, %v", st, err)
		}
		s := st[0]
		if s.LastRunAt == nil || !s.LastRunAt.Equal(t0.Add(5*time.Minute)) || s.LastSuccessAt == nil || !s.LastSuccessAt.Equal(t0) ||
			s.NextRunAt == nil || !s.NextRunAt.Equal(t0.Add(10*time.Minute)) || s.LastError != "imap dial: refused" {
			t.Fatalf("state = %+v", s)
		}
	})
}

func TestAllowed(t *testing.T) {
	for _, tc := range []struct {
		from string
		want bool
	}{
		{"a@b.com", true}, {"A@B.COM", true}, {"x@corp.org", true}, {"x@sub.corp.org", false}, {"", false}, {"z@b.com", false},
	} {
		if got := allowed(tc.from, []string{"a@b.com", "*@Corp.org"}); got != tc.want {
			t.Errorf("allowed(%q) = %v, want %v", tc.from, got, tc.want)
		}
	}
}

// TestBatchedAcks delivers a run of messages before waiting on any ack, as
// the IMAP fetcher does: a reply to a parent in the same run is still a
// reply (in-flight Message-IDs), the same bytes twice in one run are one
// ledger row, and the first Wait records every acknowledged event.
func TestBatchedAcks(t *testing.T) {
	storagetest.ForEachDriver(t, func(t *testing.T, db *sqlx.DB) {
		e := newEnv(t, db, false)
		ctx := context.Background()
		var logs strings.Builder
		logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		sink := e.p.ForServer(config.Server{Name: "s1", Username: "help", EmailDebug: true}, logger)
		raws := []string{
			mail("a@cust.com", "p@cust.com", "Parent", "X-Secret-Body-Marker: no"),
			mail("a@cust.com", "c@cust.com", "Re: Parent", "In-Reply-To: <p@cust.com>"),
		}
		for i := 0; i < 20; i++ {
			raws = append(raws, mail("b@cust.com", fmt.Sprintf("m%d@cust.com", i), "bulk"))
		}
		raws = append(raws, raws[5]) // same bytes again within the run
		var acks []fetcher.Ack
		for i, raw := range raws {
			ack, err := sink.Deliver(ctx, &fetcher.Message{Server: "s1", Folder: "INBOX", Ref: fmt.Sprint("imap:1:", i+1), Body: spool.FromBytes([]byte(raw))})
			if err != nil {
				t.Fatal(err)
			}
			acks = append(acks, ack)
		}
		// Once every PubAck is in, the first Wait records the whole run.
		deadline := time.Now().Add(20 * time.Second)
		for !allAcked(e.p) {
			if time.Now().After(deadline) {
				t.Fatalf("PubAcks did not arrive within 20s")
			}
			time.Sleep(5 * time.Millisecond) // polling interval
		}
		if err := acks[0].Wait(ctx); err != nil {
			t.Fatal(err)
		}
		var rows int
		if err := db.Get(&rows, `SELECT COUNT(*) FROM pipeline_ledger`); err != nil || rows != 22 {
			t.Fatalf("after the first Wait the ledger holds %d rows (%v); want the whole run, 22", rows, err)
		}
		for _, a := range acks {
			if err := a.Wait(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if err := db.Get(&rows, `SELECT COUNT(*) FROM pipeline_ledger`); err != nil || rows != 22 {
			t.Fatalf("ledger rows = %d, %v; want 22", rows, err)
		}
		if ev := lastEvent(t, e.js, "mail.s1.reply"); ev.MessageID != "c@cust.com" {
			t.Fatalf("reply event = %s", ev.MessageID)
		}
		st, _ := e.p.Status(ctx)
		if len(st) != 1 || st[0].Fetched != 23 || st[0].Published != 22 || st[0].Duplicates != 1 {
			t.Fatalf("state = %+v; want fetched 23 published 22 duplicates 1", st)
		}
		if n := streamMsgs(t, e.js); n != 22 {
			t.Fatalf("stream holds %d, want 22 (JetStream dropped the in-run duplicate)", n)
		}
		if len(e.p.pending) != 0 {
			t.Fatalf("%d acks left pending", len(e.p.pending))
		}
		l := logs.String()
		if !strings.Contains(l, "in_reply_to names published message") || !strings.Contains(l, "kind=new_request") {
			t.Fatalf("email_debug log lacks the decisions:\n%s", l)
		}
		if strings.Contains(l, "Hello p@cust.com") || strings.Contains(l, "Parent") {
			t.Fatalf("email_debug log contains the body or subject:\n%s", l)
		}
	})
}

func TestAttachmentsToObjectStore(t *testing.T) {
	storagetest.ForEachDriver(t, func(t *testing.T, db *sqlx.DB) {
		e := newEnv(t, db, false)
		ctx := context.Background()
		objs, err := publisher.NewObjects(ctx, e.js, "attachments", t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		e.p.objects = objs
		sink := e.p.ForServer(config.Server{Name: "s1", Username: "help"}, nil)
		raw := "From: a@cust.com\r\nMessage-ID: <att@cust.com>\r\nSubject: Log\r\nMIME-Version: 1.0\r\n" +
			"Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n" +
			"--b\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n" +
			"--b\r\nContent-Type: text/plain; name=\"log.txt\"\r\nContent-Disposition: attachment; filename=\"log.txt\"\r\n" +
			"Content-Transfer-Encoding: base64\r\n\r\naGVsbG8gd29ybGQ=\r\n--b--\r\n"
		if err := deliver(t, sink, "imap:1:1", raw); err != nil {
			t.Fatal(err)
		}
		ev := lastEvent(t, e.js, "mail.s1.request")
		if len(ev.Attachments) != 1 {
			t.Fatalf("attachments = %+v", ev.Attachments)
		}
		a := ev.Attachments[0]
		// sha256("hello world")
		const want = "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
		if a.SHA256 != want || a.Object != want {
			t.Fatalf("attachment sha %s object %s, want both %s", a.SHA256, a.Object, want)
		}
		r, err := objs.Get(ctx, a.Object)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		var sb strings.Builder
		if _, err := io.Copy(&sb, r); err != nil || sb.String() != "hello world" {
			t.Fatalf("stored object = %q, %v", sb.String(), err)
		}
	})
}

// allAcked reports whether every pending publish has its PubAck.
func allAcked(p *Pipeline) bool {
	p.pendMu.Lock()
	defer p.pendMu.Unlock()
	for _, a := range p.pending {
		if _, _, done := a.fut.Poll(); !done {
			return false
		}
	}
	return true
}
