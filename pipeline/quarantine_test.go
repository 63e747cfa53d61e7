package pipeline

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jmoiron/sqlx"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mailworker/mailworker/config"
	"github.com/mailworker/mailworker/fetcher"
	"github.com/mailworker/mailworker/parser"
	"github.com/mailworker/mailworker/publisher"
	"github.com/mailworker/mailworker/spool"
	"github.com/mailworker/mailworker/storage/storagetest"
)

// funcStore is an AttachmentStore whose sink calls put.
type funcStore struct {
	put func(meta parser.Attachment, body io.Reader) (string, error)
}

func (f funcStore) Sink(context.Context) parser.Sink { return f }

func (f funcStore) Put(meta parser.Attachment, body io.Reader) (string, error) {
	return f.put(meta, body)
}

const withAttachment = "From: a@cust.com\r\nTo: help@example.com\r\nMessage-ID: <att@cust.com>\r\nSubject: Log\r\n" +
	"Date: Tue, 24 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n" +
	"Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n" +
	"--b\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n" +
	"--b\r\nContent-Type: text/plain; name=\"log.txt\"\r\nContent-Disposition: attachment; filename=\"log.txt\"\r\n" +
	"Content-Transfer-Encoding: base64\r\n\r\naGVsbG8gd29ybGQ=\r\n--b--\r\n"

func sha(raw string) string {
	s := sha256.Sum256([]byte(raw))
	return hex.EncodeToString(s[:])
}

// checkFailed asserts that the newest failed event of s1 is raw's, with
// code, and that its raw copy is kept byte for byte.
func checkFailed(t *testing.T, e *env, raw, code string) *publisher.Event {
	t.Helper()
	ev := lastEvent(t, e.js, "mail.s1.failed")
	if ev.Kind != publisher.KindFailed || ev.Error == nil || ev.Error.Code != code || ev.Raw.SHA256 != sha(raw) {
		t.Fatalf("failed event = %+v (error %+v), want code %s for sha %s", ev, ev.Error, code, sha(raw))
	}
	kept, err := os.ReadFile(filepath.Join(e.dir, ev.Raw.Object))
	if err != nil || string(kept) != raw {
		t.Fatalf("raw copy at %q: %d bytes, %v; want the %d raw bytes", ev.Raw.Object, len(kept), err, len(raw))
	}
	return ev
}

// TestTransientErrorBoundedAttempts: an error that is neither an outage nor
// known to be permanent fails the message for MaxAttempts-1 runs, then the
// MaxAttempts-th run quarantines it (failed event, raw kept, counted in
// status); Retry publishes it once the cause is gone. Outage errors are
// retried without being counted.
func TestTransientErrorBoundedAttempts(t *testing.T) {
	storagetest.ForEachDriver(t, func(t *testing.T, db *sqlx.DB) {
		e := newEnv(t, db, false)
		ctx := context.Background()
		var storeErr error
		e.p.objects = funcStore{put: func(_ parser.Attachment, body io.Reader) (string, error) {
			io.Copy(io.Discard, body)
			return "", storeErr
		}}
		sink := e.p.ForServer(config.Server{Name: "s1", Username: "help"}, nil)

		// An outage (NATS down while storing the attachment) is not counted.
		storeErr = fmt.Errorf("put: %w", publisher.ErrNotConnected)
		for run := 0; run < MaxAttempts+2; run++ {
			if err := deliver(t, sink, "imap:1:1", withAttachment); !errors.Is(err, publisher.ErrNotConnected) {
				t.Fatalf("run %d: deliver = %v, want the outage error", run, err)
			}
		}
		var n int
		if err := db.Get(&n, `SELECT COUNT(*) FROM pipeline_attempts`); err != nil || n != 0 {
			t.Fatalf("attempts rows after outages = %d, %v; want 0", n, err)
		}

		storeErr = errors.New("object store hiccup")
		for run := 1; run < MaxAttempts; run++ {
			err := deliver(t, sink, "imap:1:1", withAttachment)
			if err == nil || !strings.Contains(err.Error(), "object store hiccup") {
				t.Fatalf("run %d: deliver = %v, want the store's error", run, err)
			}
			if err := db.Get(&n, db.Rebind(`SELECT attempts FROM pipeline_attempts WHERE server = ? AND raw_sha256 = ?`), "s1", sha(withAttachment)); err != nil || n != run {
				t.Fatalf("run %d: attempts = %d, %v", run, n, err)
			}
		}
		if got := e.pub.n.Load(); got != 0 {
			t.Fatalf("published %d events before the quarantine", got)
		}
		// The MaxAttempts-th run quarantines: Deliver and Wait succeed, so
		// the fetcher moves on.
		if err := deliver(t, sink, "imap:1:1", withAttachment); err != nil {
			t.Fatalf("run %d: deliver = %v, want the quarantine (nil)", MaxAttempts, err)
		}
		ev := checkFailed(t, e, withAttachment, CodeTooManyAttempts)
		if !strings.Contains(ev.Error.Message, "object store hiccup") {
			t.Fatalf("failed event message %q lacks the last error", ev.Error.Message)
		}
		st, err := e.p.Status(ctx)
		if err != nil || len(st) != 1 || st[0].Failed != 1 || st[0].Fetched != 1 {
			t.Fatalf("status = %+v, %v; want fetched 1 failed 1", st, err)
		}
		if err := db.Get(&n, `SELECT COUNT(*) FROM pipeline_attempts`); err != nil || n != 0 {
			t.Fatalf("attempts rows after the quarantine = %d, %v; want 0", n, err)
		}
		// Next run: the ledger knows it; nothing is published again.
		if err := deliver(t, sink, "imap:1:1", withAttachment); err != nil {
			t.Fatal(err)
		}
		if got := e.pub.n.Load(); got != 1 {
			t.Fatalf("published %d events, want only the failed one", got)
		}
		// The store works again: `mailworker failed retry` publishes it.
		storeErr = nil
		res, err := e.p.Retry(ctx, "")
		if err != nil || len(res) != 1 || res[0].Err != nil || res[0].Kind != publisher.KindNewRequest {
			t.Fatalf("Retry = %+v, %v", res, err)
		}
		if full := lastEvent(t, e.js, "mail.s1.request"); full.MessageID != "att@cust.com" || len(full.Attachments) != 1 {
			t.Fatalf("retried event = %+v", full)
		}
	})
}

// TestParserPanicQuarantined: a panic inside Parse is recovered and the
// message becomes a failed event (parser_panic); the next message of the
// same run is published.
func TestParserPanicQuarantined(t *testing.T) {
	storagetest.ForEachDriver(t, func(t *testing.T, db *sqlx.DB) {
		e := newEnv(t, db, false)
		e.p.objects = funcStore{put: func(parser.Attachment, io.Reader) (string, error) { panic("index out of range [7] with length 3") }}
		sink := e.p.ForServer(config.Server{Name: "s1", Username: "help"}, nil)
		if err := deliver(t, sink, "imap:1:1", withAttachment); err != nil {
			t.Fatalf("deliver = %v, want the quarantine (nil)", err)
		}
		ev := checkFailed(t, e, withAttachment, CodeParserPanic)
		if !strings.Contains(ev.Error.Message, "index out of range") {
			t.Fatalf("failed event message = %q", ev.Error.Message)
		}
		if err := deliver(t, sink, "imap:1:2", mail("a@cust.com", "next@cust.com", "next")); err != nil {
			t.Fatal(err)
		}
		if ev := lastEvent(t, e.js, "mail.s1.request"); ev.MessageID != "next@cust.com" {
			t.Fatalf("next event = %s", ev.MessageID)
		}
	})
}

// TestTooLargeMail: mail over max_message_bytes is not parsed: it is kept
// whole and published as failed (too_large); Retry keeps it failed while
// the limit is unchanged.
func TestTooLargeMail(t *testing.T) {
	storagetest.ForEachDriver(t, func(t *testing.T, db *sqlx.DB) {
		e := newEnv(t, db, false)
		ctx := context.Background()
		e.p.opts.MaxMessageBytes = 4096
		sink := e.p.ForServer(config.Server{Name: "s1", Username: "help"}, nil)
		raw := mail("a@cust.com", "big@cust.com", "Big") + strings.Repeat("0123456789abcdef\r\n", 400)
		if err := deliver(t, sink, "imap:1:1", raw); err != nil {
			t.Fatal(err)
		}
		ev := checkFailed(t, e, raw, CodeTooLarge)
		if ev.Raw.Size != int64(len(raw)) || !strings.Contains(ev.Error.Message, "max_message_bytes") {
			t.Fatalf("failed event raw %+v error %+v", ev.Raw, ev.Error)
		}
		res, err := e.p.Retry(ctx, "")
		if err != nil || len(res) != 1 || res[0].Err == nil {
			t.Fatalf("Retry under the same limit = %+v, %v; want an error", res, err)
		}
		e.p.opts.MaxMessageBytes = 1 << 20 // the admin raised the limit
		res, err = e.p.Retry(ctx, "")
		if err != nil || len(res) != 1 || res[0].Err != nil {
			t.Fatalf("Retry under a raised limit = %+v, %v", res, err)
		}
	})
}

// bigBodies is a message whose event is about 3 MB: 1.9 MB of plain text
// and 1.9 MB of HTML (the in-process NATS max payload is 1 MB).
func bigBodies(msgid string) string {
	var b strings.Builder
	b.WriteString("From: news@cust.com\r\nTo: help@example.com\r\nMessage-ID: <" + msgid + ">\r\nSubject: Newsletter\r\n")
	b.WriteString("Date: Tue, 24 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"alt\"\r\n\r\n")
	b.WriteString("--alt\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n")
	for b.Len() < 1900<<10 {
		b.WriteString("Dies ist eine lange Zeile des Rundbriefs über Öffnungszeiten.\r\n")
	}
	b.WriteString("--alt\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html><body>\r\n")
	for b.Len() < 3800<<10 {
		b.WriteString("<p class=\"x\">Dies ist <b>eine</b> lange Zeile &amp; mehr.</p>\r\n")
	}
	b.WriteString("</body></html>\r\n--alt--\r\n")
	return b.String()
}

// TestEventsAlwaysFit: an event over the connection's max payload is
// published with its html, then its text, cut (body_truncated) and the raw
// message kept; the JSON on the stream is not HTML-escaped.
func TestEventsAlwaysFit(t *testing.T) {
	storagetest.ForEachDriver(t, func(t *testing.T, db *sqlx.DB) {
		e := newEnv(t, db, false)
		ctx := context.Background()
		e.p.opts.MaxBodyBytes = 4 << 20 // keep the bodies whole in the parser
		sink := e.p.ForServer(config.Server{Name: "s1", Username: "help"}, nil)
		raw := bigBodies("news@cust.com")
		if err := deliver(t, sink, "imap:1:1", raw); err != nil {
			t.Fatal(err)
		}
		s, err := e.js.Stream(ctx, publisher.DefaultStream)
		if err != nil {
			t.Fatal(err)
		}
		m, err := s.GetLastMsgForSubject(ctx, "mail.s1.request")
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(m.Data)) > e.nc.MaxPayload() {
			t.Fatalf("event of %d bytes over the max payload %d", len(m.Data), e.nc.MaxPayload())
		}
		ev := lastEvent(t, e.js, "mail.s1.request")
		var warned bool
		for _, w := range ev.Warnings {
			warned = warned || w.Code == WarnBodyTruncated
		}
		// 1.9 MB of text alone is over 1 MB: the html goes, then the text is cut.
		if !warned || ev.HTML != "" || len(ev.Text) == 0 || len(ev.Text) >= 1<<20 {
			t.Fatalf("warnings %+v, html %d bytes, text %d bytes; want body_truncated, html cut first", ev.Warnings, len(ev.HTML), len(ev.Text))
		}
		if !strings.HasPrefix(ev.Text, "Dies ist eine lange Zeile") {
			t.Fatalf("text starts %.60q", ev.Text)
		}
		kept, err := os.ReadFile(filepath.Join(e.dir, ev.Raw.Object))
		if err != nil || string(kept) != raw {
			t.Fatalf("raw kept at %q: %d bytes, %v", ev.Raw.Object, len(kept), err)
		}
		// A small event with HTML is published as it is, unescaped.
		html := "From: a@cust.com\r\nMessage-ID: <h@cust.com>\r\nSubject: html\r\nContent-Type: text/html\r\n\r\n<p>Hi &amp; bye</p>\r\n"
		if err := deliver(t, sink, "imap:1:2", html); err != nil {
			t.Fatal(err)
		}
		m, err = s.GetLastMsgForSubject(ctx, "mail.s1.request")
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(m.Data, []byte(`\u003c`)) || bytes.Contains(m.Data, []byte(`\u0026`)) || !bytes.Contains(m.Data, []byte(`<p>Hi &amp; bye</p>`)) {
			t.Fatalf("event JSON = %s", m.Data)
		}
		if ev := lastEvent(t, e.js, "mail.s1.request"); ev.Raw.Object != "" {
			t.Fatalf("raw of a whole event kept at %q", ev.Raw.Object)
		}
	})
}

// TestHeaderValuesReachingSQL: Message-IDs with invalid UTF-8, NUL or over
// the index limit are stored hashed, on SQLite and PostgreSQL alike, and a
// reply naming them still finds its thread.
func TestHeaderValuesReachingSQL(t *testing.T) {
	storagetest.ForEachDriver(t, func(t *testing.T, db *sqlx.DB) {
		e := newEnv(t, db, false)
		sink := e.p.ForServer(config.Server{Name: "s1", Username: "help"}, nil)
		long := strings.Repeat("x", 5000) + "@cust.com"
		for i, id := range []string{"caf\xe9\x00x@cust.com", long} {
			if err := deliver(t, sink, fmt.Sprint("imap:1:", 2*i+1), mail("a@cust.com", id, "odd id")); err != nil {
				t.Fatalf("message %d: %v", i, err)
			}
			if ev := lastEvent(t, e.js, "mail.s1.request"); ev.Kind != publisher.KindNewRequest {
				t.Fatalf("message %d: %+v", i, ev)
			}
			var stored string
			if err := db.Get(&stored, db.Rebind(`SELECT message_id FROM pipeline_ledger WHERE source_ref = ?`), fmt.Sprint("imap:1:", 2*i+1)); err != nil {
				t.Fatal(err)
			}
			if stored != sqlKey(id) || !strings.HasPrefix(stored, keyPrefix) {
				t.Fatalf("message %d: stored message_id %q", i, stored)
			}
			reply := mail("a@cust.com", fmt.Sprintf("reply%d@cust.com", i), "Re: odd id", "In-Reply-To: <"+id+">")
			if err := deliver(t, sink, fmt.Sprint("imap:1:", 2*i+2), reply); err != nil {
				t.Fatal(err)
			}
			if ev := lastEvent(t, e.js, "mail.s1.reply"); ev.MessageID != fmt.Sprintf("reply%d@cust.com", i) {
				t.Fatalf("message %d: the reply was not threaded: %s", i, ev.MessageID)
			}
		}
		if sqlKey("ok@cust.com") != "ok@cust.com" || sqlKey(sqlKey(long)) != sqlKey(long) {
			t.Fatal("sqlKey changes a sane value or is not idempotent")
		}
	})
}

// refuseRow makes the database refuse ledger rows of published events
// whose Message-ID is msgid (as a constraint would), on either driver.
func refuseRow(t *testing.T, db *sqlx.DB, msgid string) {
	t.Helper()
	var stmts []string
	if db.DriverName() == "sqlite" {
		stmts = []string{`CREATE TRIGGER refuse_poison BEFORE INSERT ON pipeline_ledger
WHEN NEW.message_id = '` + msgid + `' AND NEW.status <> 'failed'
BEGIN SELECT RAISE(ABORT, 'value refused'); END`}
	} else {
		stmts = []string{`CREATE FUNCTION refuse_poison() RETURNS trigger AS $$
BEGIN
  IF NEW.message_id = '` + msgid + `' AND NEW.status <> 'failed' THEN
    RAISE EXCEPTION 'value refused' USING ERRCODE = '22023';
  END IF;
  RETURN NEW;
END $$ LANGUAGE plpgsql`,
			`CREATE TRIGGER refuse_poison BEFORE INSERT ON pipeline_ledger FOR EACH ROW EXECUTE FUNCTION refuse_poison()`}
	}
	for _, s := range stmts {
		if _, err := db.Exec(s); err != nil {
			t.Fatal(err)
		}
	}
}

// TestBadLedgerRowIsolated: ledger rows of all servers are written in
// shared batches; a row the database refuses fails neither the batch's
// other rows nor another server's ack: the batch falls back to one row per
// transaction, and the refused row's message is quarantined (db_refused).
func TestBadLedgerRowIsolated(t *testing.T) {
	storagetest.ForEachDriver(t, func(t *testing.T, db *sqlx.DB) {
		e := newEnv(t, db, false)
		ctx := context.Background()
		refuseRow(t, db, "poison@cust.com")
		s1 := e.p.ForServer(config.Server{Name: "s1", Username: "help"}, nil)
		s2 := e.p.ForServer(config.Server{Name: "s2", Username: "other"}, nil)
		type item struct {
			sink     fetcher.Sink
			ref, raw string
			ack      fetcher.Ack
		}
		items := []*item{
			{sink: s2, ref: "imap:2:1", raw: mail("b@cust.com", "s2-good@cust.com", "s2 good")},
			{sink: s1, ref: "imap:1:1", raw: mail("a@cust.com", "poison@cust.com", "poison")},
			{sink: s1, ref: "imap:1:2", raw: mail("a@cust.com", "s1-good@cust.com", "s1 good")},
		}
		for _, it := range items {
			ack, err := it.sink.Deliver(ctx, &fetcher.Message{Folder: "INBOX", Ref: it.ref, Body: spool.FromBytes([]byte(it.raw))})
			if err != nil {
				t.Fatal(err)
			}
			it.ack = ack
		}
		deadline := time.Now().Add(30 * time.Second)
		for !allAcked(e.p) {
			if time.Now().After(deadline) {
				t.Fatalf("PubAcks did not arrive within 30s")
			}
			time.Sleep(5 * time.Millisecond) // polling interval
		}
		// s2's Wait writes the shared batch, which holds the poison row.
		if err := items[0].ack.Wait(ctx); err != nil {
			t.Fatalf("s2's ack = %v; one bad row of s1 failed another server's ack", err)
		}
		var rows int
		if err := db.Get(&rows, db.Rebind(`SELECT COUNT(*) FROM pipeline_ledger WHERE status = ?`), StatusPublished); err != nil || rows != 2 {
			t.Fatalf("published rows after s2's Wait = %d, %v; want both good ones", rows, err)
		}
		for _, it := range items[1:] {
			if err := it.ack.Wait(ctx); err != nil {
				t.Fatalf("%s: ack = %v, want nil (quarantined)", it.ref, err)
			}
		}
		checkFailed(t, e, items[1].raw, CodeDBRefused)
		var st string
		if err := db.Get(&st, db.Rebind(`SELECT status FROM pipeline_ledger WHERE source_ref = ?`), "imap:1:1"); err != nil || st != StatusFailed {
			t.Fatalf("poison ledger status = %q, %v", st, err)
		}
		states, err := e.p.Status(ctx)
		if err != nil || len(states) != 2 || states[0].Published != 1 || states[0].Failed != 1 || states[1].Published != 1 {
			t.Fatalf("status = %+v, %v", states, err)
		}
		if len(e.p.pending) != 0 {
			t.Fatalf("%d acks left pending", len(e.p.pending))
		}
	})
}

// TestClassify pins the error classes and codes the quarantine relies on.
func TestClassify(t *testing.T) {
	sinkErr := func(err error) error { return fmt.Errorf("%w: attachment 1 (text/plain): %w", parser.ErrSink, err) }
	for _, tc := range []struct {
		err  error
		want errClass
		code string
	}{
		{fmt.Errorf("x: %w", publisher.ErrNotConnected), classOutage, ""},
		{context.DeadlineExceeded, classOutage, ""},
		{&pgconn.PgError{Code: "08006"}, classOutage, ""},
		{&pgconn.PgError{Code: "40001"}, classOutage, ""},
		{&jetstream.APIError{ErrorCode: jetstream.JSErrCodeStreamNotFound}, classOutage, ""},
		{sinkErr(publisher.ErrNotConnected), classOutage, ""},
		{&publisher.TooLargeError{Size: 3, Max: 2}, classPermanent, CodeEventTooLarge},
		{&jetstream.APIError{ErrorCode: jetstream.JSErrCodeStreamMessageExceedsMaximum}, classPermanent, CodeEventTooLarge},
		{fmt.Errorf("%w: boom", errPanic), classPermanent, CodeParserPanic},
		{fmt.Errorf("insert: %w", &pgconn.PgError{Code: "22021"}), classPermanent, CodeDBRefused},
		{&pgconn.PgError{Code: "54000"}, classPermanent, CodeDBRefused},
		{sinkErr(&jetstream.APIError{ErrorCode: 10047, Description: "insufficient resources"}), classPermanent, CodeAttachmentRefused},
		{errors.New("something odd"), classRetry, ""},
		{sinkErr(errors.New("odd")), classRetry, ""},
	} {
		if got := classify(tc.err); got != tc.want {
			t.Errorf("classify(%v) = %d, want %d", tc.err, got, tc.want)
		}
		if tc.code != "" && codeOf(tc.err) != tc.code {
			t.Errorf("codeOf(%v) = %s, want %s", tc.err, codeOf(tc.err), tc.code)
		}
	}
}
