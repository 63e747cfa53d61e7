package pipeline

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jmoiron/sqlx"

	"github.com/mailworker/mailworker/config"
	"github.com/mailworker/mailworker/publisher"
	"github.com/mailworker/mailworker/storage/storagetest"
)

// TestServerFieldOptions: the pipeline parses with the server's
// plus_address_ticket_ref and trusted_authserv_ids (issue 17), so a mail
// to help+42@ becomes a reply to 42 and only the trusted
// Authentication-Results fill auth.
func TestServerFieldOptions(t *testing.T) {
	storagetest.ForEachDriver(t, func(t *testing.T, db *sqlx.DB) {
		e := newEnv(t, db, false)
		sink := e.p.ForServer(config.Server{Name: "s1", Addresses: []string{"help@example.com"},
			PlusAddressTicketRef: true, TrustedAuthservIDs: []string{"mx.example.com"}}, nil)
		raw := "Authentication-Results: mx.example.com; spf=pass smtp.mailfrom=cust.com; dmarc=fail header.from=cust.com\r\n" +
			"Authentication-Results: evil.example; dmarc=pass header.from=cust.com\r\n" +
			"Delivered-To: help+42@example.com\r\n" +
			"From: a@cust.com\r\nTo: Help <help@example.com>\r\nMessage-ID: <plus1@cust.com>\r\nSubject: printer again\r\n" +
			"Date: Tue, 24 Nov 2026 10:00:00 +0000\r\n\r\nStill broken.\r\n\r\nSent from my iPhone\r\n"
		if err := deliver(t, sink, "imap:1:1", raw); err != nil {
			t.Fatalf("deliver: %v", err)
		}
		ev := lastEvent(t, e.js, "mail.s1.reply")
		if ev.Kind != publisher.KindReply || ev.TicketRef != "42" || ev.TicketRefSource != "plus_address" {
			t.Fatalf("kind %s ticket_ref %q from %q, want reply to 42 from plus_address", ev.Kind, ev.TicketRef, ev.TicketRefSource)
		}
		if r := ev.OriginalRecipient; r == nil || r.Address != "help+42@example.com" || r.Source != "delivered-to" || r.Tag != "42" {
			t.Fatalf("original_recipient = %+v", r)
		}
		if ev.Auth.AuthservID != "mx.example.com" || ev.Auth.SPF != "pass" || ev.Auth.DMARC != "fail" {
			t.Fatalf("auth = %+v, want mx.example.com's spf pass, dmarc fail", ev.Auth)
		}
		if ev.ReplyText != "Still broken." || ev.Signature != "Sent from my iPhone" || len(ev.Headers) != 8 || ev.Raw.Object != "" {
			t.Fatalf("reply_text %q signature %q, %d headers, raw.object %q", ev.ReplyText, ev.Signature, len(ev.Headers), ev.Raw.Object)
		}

		// header fields over 64 KiB: headers is cut, so the raw is kept
		big := strings.Repeat("X-Filler: "+strings.Repeat("f", 1000)+"\r\n", 70) +
			"From: b@cust.com\r\nTo: help@example.com\r\nMessage-ID: <big1@cust.com>\r\nSubject: [#9] big\r\n\r\nbody\r\n"
		if err := deliver(t, sink, "imap:1:2", big); err != nil {
			t.Fatalf("deliver: %v", err)
		}
		ev = lastEvent(t, e.js, "mail.s1.reply")
		if ev.MessageID != "big1@cust.com" || len(ev.Headers) >= 70 || ev.Raw.Object == "" {
			t.Fatalf("message %s: %d headers, raw.object %q; want the list cut and the raw kept", ev.MessageID, len(ev.Headers), ev.Raw.Object)
		}
		if kept, err := os.ReadFile(filepath.Join(e.dir, ev.Raw.Object)); err != nil || string(kept) != big {
			t.Fatalf("kept raw: %d bytes, %v", len(kept), err)
		}
	})
}
