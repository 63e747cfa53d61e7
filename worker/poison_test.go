package worker

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/mailworker/mailworker/config"
	"github.com/mailworker/mailworker/imaptest"
	"github.com/mailworker/mailworker/parser/parsertest"
	"github.com/mailworker/mailworker/pipeline"
	"github.com/mailworker/mailworker/publisher"
	"github.com/mailworker/mailworker/storage/storagetest"
)

// newsletter is a message whose event is about 3 MB: 1.9 MB of plain text
// and 1.9 MB of HTML; the broker's max payload is NATS' default, 1 MB.
func newsletter(msgid string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: News <news@example.com>\r\nTo: support@example.test\r\nSubject: Newsletter\r\nMessage-ID: <%s>\r\n", msgid)
	b.WriteString("Date: Mon, 02 Jan 2006 15:04:05 +0000\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=alt\r\n\r\n")
	b.WriteString("--alt\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n")
	for b.Len() < 1900<<10 {
		b.WriteString("This week: printers, coffee machines and other things that break.\r\n")
	}
	b.WriteString("--alt\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html><body>\r\n")
	for b.Len() < 3800<<10 {
		b.WriteString("<p>This week: <b>printers</b>, coffee machines &amp; other things that break.</p>\r\n")
	}
	b.WriteString("</body></html>\r\n--alt--\r\n")
	return b.Bytes()
}

// badMessageID is a message whose Message-ID holds a raw 0xE9 byte and a
// NUL: invalid UTF-8 that PostgreSQL refuses as it is.
func badMessageID() []byte {
	return []byte("From: Customer <c@example.com>\r\nTo: support@example.test\r\nSubject: Caf\xe9\r\n" +
		"Message-ID: <caf\xe9\x00bad@example.com>\r\nDate: Mon, 02 Jan 2006 15:04:05 +0000\r\n" +
		"Content-Type: text/plain; charset=iso-8859-1\r\n\r\nMy caf\xe9 order is missing.\r\n")
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// TestPoisonMessagesDovecot is issue 11's acceptance run: a mailbox holds,
// in this order, a good message, a message whose event is 3 MB, one with
// a raw 0xE9 and a NUL in its Message-ID, a winmail.dat with 5,000 files,
// a good message and (after them) one over max_message_bytes. A second
// server is fetched concurrently. On SQLite and PostgreSQL, every run ends
// with every message handled exactly once: the good ones published, the
// newsletter published with its bodies cut to fit (body_truncated), the
// odd Message-ID published (stored hashed), the winmail.dat bounded by
// max_parts, the oversized one published as failed (too_large) — the raw
// of each of the last four kept — the checkpoint past all six, and the
// second server's mail all published. A second run publishes nothing.
func TestPoisonMessagesDovecot(t *testing.T) {
	for _, driver := range storagetest.Drivers {
		t.Run(driver, func(t *testing.T) {
			const other = "bob"
			d := imaptest.StartDovecot(t, imaptest.DovecotOptions{Users: map[string]string{testUser: testPassword, other: testPassword}})
			oversized := message(900, 5<<20)
			msgs := [][]byte{
				message(1, 4<<10),
				newsletter("newsletter@example.com"),
				badMessageID(),
				parsertest.WinmailMessage("winmail@example.com", parsertest.ManyTNEFFiles(5000)),
				message(2, 4<<10),
				oversized,
			}
			d.SeedMaildir(testUser, "INBOX", msgs)
			var otherMsgs [][]byte
			for i := 0; i < 40; i++ {
				otherMsgs = append(otherMsgs, message(1000+i, 2<<10+i*100))
			}
			d.SeedMaildir(other, "INBOX", otherMsgs)

			b := startBroker(t)
			support := imapServer("support", d, "mark_seen")
			second := imapServer("second", d, "mark_seen")
			second.Username, second.Addresses = other, []string{"second@example.test"}
			cfg := testConfig(t, driver, b.url(), support, second)
			cfg.Parser.MaxMessageBytes = 4500 << 10 // the newsletter (3.9 MB) passes, the 5 MB one does not
			w := openWorker(t, cfg, nil)
			defer w.Close()
			ctx := context.Background()

			for run := 1; run <= 2; run++ {
				// Both servers fetch at once, so their ledger rows share batches.
				var wg sync.WaitGroup
				errs := make([]error, 2)
				for i, srv := range []config.Server{support, second} {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for {
							st, err := w.fetch(ctx, srv)
							if err != nil || !st.More {
								errs[i] = err
								return
							}
						}
					}()
				}
				wg.Wait()
				for i, err := range errs {
					if err != nil {
						t.Fatalf("run %d: server %d: %v", run, i, err)
					}
				}
				checkPoisonRun(t, run, b, w, d, msgs, len(otherMsgs))
			}
		})
	}
}

func checkPoisonRun(t *testing.T, run int, b *broker, w *Worker, d *imaptest.Dovecot, msgs [][]byte, others int) {
	t.Helper()
	evs := b.events(t)
	if ids := uniqueIDs(t, evs); len(evs) != len(msgs)+others || len(ids) != len(evs) {
		t.Fatalf("run %d: stream holds %d events (%d unique); want %d", run, len(evs), len(ids), len(msgs)+others)
	}
	var mine []publisher.Event
	seconds := 0
	for _, ev := range evs {
		switch ev.Server {
		case "support":
			mine = append(mine, ev)
		case "second":
			if string(ev.Kind) != "mail.second.request" {
				t.Errorf("run %d: second server event on %s", run, ev.Kind)
			}
			seconds++
		}
	}
	if seconds != others {
		t.Fatalf("run %d: second server published %d events; want %d", run, seconds, others)
	}
	if len(mine) != len(msgs) {
		t.Fatalf("run %d: support published %d events; want %d", run, len(mine), len(msgs))
	}
	// Order of the stream within one server follows the UIDs.
	byMsgID := map[string]publisher.Event{}
	var failed []publisher.Event
	for _, ev := range mine {
		if ev.Message != nil {
			byMsgID[ev.MessageID] = ev
		} else {
			failed = append(failed, ev)
		}
	}
	cfg := w.Config()
	kept := func(ev publisher.Event, want []byte) {
		t.Helper()
		if ev.Raw.Object == "" {
			t.Fatalf("run %d: event %s keeps no raw", run, ev.ID)
		}
		got, err := os.ReadFile(filepath.Join(cfg.DataDir, ev.Raw.Object))
		if err != nil {
			t.Fatalf("run %d: raw of %s: %v", run, ev.ID, err)
		}
		if sha256Hex(got) != ev.Raw.SHA256 || want != nil && !bytes.Equal(got, want) {
			t.Fatalf("run %d: raw kept at %s differs from the fetched message", run, ev.Raw.Object)
		}
	}
	hasWarn := func(ev publisher.Event, code string) bool {
		for _, w := range ev.Warnings {
			if w.Code == code {
				return true
			}
		}
		return false
	}
	for _, id := range []string{"msg-1@example.com", "msg-2@example.com"} {
		if ev, ok := byMsgID[id]; !ok || string(ev.Kind) != "mail.support.request" || ev.Raw.Object != "" {
			t.Fatalf("run %d: good message %s: %+v", run, id, ev.Raw)
		}
	}
	news, ok := byMsgID["newsletter@example.com"]
	if !ok || !hasWarn(news, pipeline.WarnBodyTruncated) || news.HTML != "" || news.Text == "" {
		t.Fatalf("run %d: newsletter: found %v, warnings %+v, html %d text %d bytes", run, ok, news.Warnings, len(news.HTML), len(news.Text))
	}
	kept(news, msgs[1])
	var odd publisher.Event
	for id, ev := range byMsgID {
		if strings.HasPrefix(id, "caf") && strings.HasSuffix(id, "bad@example.com") {
			odd = ev
		}
	}
	if odd.ID == "" {
		t.Fatalf("run %d: no event for the message with the odd Message-ID: %v", run, byMsgID)
	}
	var stored string
	if err := w.DB().Get(&stored, w.DB().Rebind(`SELECT message_id FROM pipeline_ledger WHERE event_id = ?`), odd.ID); err != nil {
		t.Fatalf("run %d: ledger row of the odd Message-ID: %v", run, err)
	}
	if !strings.HasPrefix(stored, "sha256 ") {
		t.Fatalf("run %d: odd Message-ID stored as %q", run, stored)
	}
	win, ok := byMsgID["winmail@example.com"]
	if !ok || !hasWarn(win, "too_many_parts") || len(win.Attachments) != cfg.Parser.MaxParts-2 {
		t.Fatalf("run %d: winmail: found %v, %d attachments, warnings %+v", run, ok, len(win.Attachments), win.Warnings)
	}
	kept(win, msgs[3])
	if len(failed) != 1 || string(failed[0].Kind) != "mail.support.failed" || failed[0].Error == nil || failed[0].Error.Code != pipeline.CodeTooLarge {
		t.Fatalf("run %d: failed events %+v", run, failed)
	}
	kept(failed[0], msgs[5])

	// The checkpoint is past all six, and every one is \Seen.
	var last uint32
	if err := w.DB().Get(&last, w.DB().Rebind(`SELECT last_uid FROM fetcher_checkpoints WHERE server = ? AND folder = ?`), "support", "INBOX"); err != nil {
		t.Fatal(err)
	}
	inbox := d.Messages(testUser, "INBOX")
	if len(inbox) != len(msgs) || last != uint32(inbox[len(inbox)-1].UID) {
		t.Fatalf("run %d: checkpoint at uid %d; INBOX %+v", run, last, inbox)
	}
	fs, err := w.Pipeline().ListFailed(context.Background(), "support")
	if err != nil || len(fs) != 1 || fs[0].Status != pipeline.FailedPending {
		t.Fatalf("run %d: ListFailed = %+v, %v", run, fs, err)
	}
	sts, err := w.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range sts {
		if st.Run == nil || st.Run.LastError != "" {
			t.Fatalf("run %d: status %+v", run, st.Run)
		}
		if st.Server == "support" && (st.Run.Failed != 1 || st.Run.Published != 5) {
			t.Fatalf("run %d: support status %+v; want 5 published, 1 failed", run, st.Run)
		}
	}
}
