package parser

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailworker/mailworker/config"
)

func parseString(t *testing.T, raw string, o Options) *Message {
	t.Helper()
	m, err := Parse(strings.NewReader(raw), o)
	if err != nil {
		t.Fatalf("Parse = %v", err)
	}
	return m
}

// TestExtraFacts checks the facts the issue-17 testdata mails were written
// (or picked) for, beside their golden files.
func TestExtraFacts(t *testing.T) {
	rcpt := func(m *Message, addr, tag, source string) error {
		r := m.OriginalRecipient
		if r == nil {
			return fmt.Errorf("original_recipient = null, want %s from %s", addr, source)
		}
		return all(eq("original_recipient.address", r.Address, addr), eq("original_recipient.tag", r.Tag, tag), eq("original_recipient.source", r.Source, source))
	}
	tests := []struct {
		file  string
		check func(m *Message) error
	}{
		{"bcc_delivered_to.eml", func(m *Message) error {
			return all(rcpt(m, "support@example.com", "", "delivered-to"), eq("to", m.To[0].Address, "vertrieb@partner.example"))
		}},
		{"alias_x_original_to.eml", func(m *Message) error {
			// Delivered-To names the real mailbox, which is not one of the
			// server's addresses; the alias it was sent to is.
			return rcpt(m, "sales@example.com", "", "x-original-to")
		}},
		{"plus_ticket.eml", func(m *Message) error {
			return all(rcpt(m, "support+123@example.com", "123", "to"), eq("ticket_ref", m.TicketRef, "123"),
				eq("ticket_ref_source", m.TicketRefSource, "plus_address"), eq("to tag", m.To[0].Tag, "123"), eq("cc tag", m.Cc[0].Tag, "cc-tag"))
		}},
		{"sent_copy_bcc.eml", func(m *Message) error {
			return all(eq("bcc", len(m.Bcc), 2), eq("bcc1", m.Bcc[1].Address, "support+77@example.com"), eq("bcc1 tag", m.Bcc[1].Tag, "77"),
				rcpt(m, "support+77@example.com", "77", "bcc"), eq("ticket_ref (option off)", m.TicketRef, ""),
				eq("reply", m.ReplyText, "We have replaced the toner."), eq("signature", m.Signature, "Agent Smith\nExample Support, +49 30 1234567"))
		}},
		{"authresults_forged.eml", func(m *Message) error {
			a := m.Auth
			if a.SpamScore == nil || a.SpamFlag == nil {
				return fmt.Errorf("spam_score/spam_flag missing: %+v", a)
			}
			// the evil.example field and the one without authserv-id say
			// pass everywhere; only mx.example.com's verdicts count
			return all(eq("authserv_id", a.AuthservID, "mx.example.com"), eq("spf", a.SPF, "fail"), eq("dkim", a.DKIM, "none"),
				eq("dmarc", a.DMARC, "fail"), eq("dmarc_domain", a.DMARCDomain, "bank.example"), eq("dkim_domains", len(a.DKIMDomains), 0),
				eq("spam_score", *a.SpamScore, 7.3), eq("spam_flag", *a.SpamFlag, true))
		}},
		{"signature_en_outlook.eml", func(m *Message) error {
			return all(eq("reply", m.ReplyText, "Works now from the hotel, thanks!"), eq("signature", m.Signature, "Get Outlook for iOS<https://aka.ms/o0ukef>"))
		}},
		{"signature_de_iphone.eml", func(m *Message) error {
			return all(eq("reply", m.ReplyText, "Danke, der Drucker läuft wieder.\n\nGrüße\nJürgen"), eq("signature", m.Signature, "Von meinem iPhone gesendet"))
		}},
		{"signature_ja_iphone.eml", func(m *Message) error {
			return all(eq("reply", m.ReplyText, "お世話になっております。\nパスワードの再設定ができました。\nありがとうございました。"),
				eq("signature", m.Signature, "iPhoneから送信"), eq("subject", m.Subject, "Re: [Ticket#5122] パスワード"))
		}},
		{"real_talon_iphone.eml", func(m *Message) error {
			return all(eq("reply", m.ReplyText, "Hello"), eq("signature", m.Signature, "Sent from my iPhone"), eq("rcpt", m.OriginalRecipient == nil, true))
		}},
		{"real_blaze_004.eml", func(m *Message) error {
			a := m.Auth
			return all(rcpt(m, "romain.calascibetta@gmail.com", "", "delivered-to"), eq("authserv_id", a.AuthservID, "mx.google.com"),
				eq("spf", a.SPF, "pass"), eq("dkim", a.DKIM, "pass"), eq("dkim_domains", strings.Join(a.DKIMDomains, ","), "discoursemail.com"),
				eq("dmarc", a.DMARC, "pass"), eq("arc", a.ARC, ""), eq("spam", a.SpamFlag == nil && a.SpamScore == nil, true))
		}},
		{"real_blaze_005.eml", func(m *Message) error {
			a := m.Auth
			// three trusted fields (one per method) merged; the
			// webhostingserver.nl field (spf=softfail, arc=none) is not trusted
			return all(eq("authserv_id", a.AuthservID, "smtp.subspace.kernel.org"), eq("spf", a.SPF, "fail"), eq("dmarc", a.DMARC, "fail"),
				eq("arc", a.ARC, "pass"), eq("dkim", a.DKIM, ""), rcpt(m, "linux-kernel@vger.kernel.org", "", "cc"))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			f := filepath.Join("testdata", tt.file)
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			m, err := Parse(bytes.NewReader(raw), goldenOptions(t, f))
			if err != nil {
				t.Fatal(err)
			}
			if err := tt.check(m); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestPlusAddressTicketRef(t *testing.T) {
	raw, err := os.ReadFile("testdata/plus_ticket.eml")
	if err != nil {
		t.Fatal(err)
	}
	own := []string{"support@example.com"}
	for _, tt := range []struct {
		name       string
		opts       Options
		raw        string
		ref, where string
	}{
		{"option off", Options{OwnAddresses: own}, string(raw), "", ""},
		{"option on", Options{OwnAddresses: own, ServerOptions: ServerOptions{PlusAddressTicketRef: true}}, string(raw), "123", "plus_address"},
		{"option on, no addresses configured", Options{ServerOptions: ServerOptions{PlusAddressTicketRef: true}},
			"Delivered-To: support+88@example.com\nTo: support+88@example.com\n\nhi\n", "88", "plus_address"},
		{"subject wins", Options{OwnAddresses: own, ServerOptions: ServerOptions{PlusAddressTicketRef: true}},
			"To: support+123@example.com\nSubject: Re: [Ticket#9] x\n\nhi\n", "9", "subject"},
		{"tag of a foreign address is not used", Options{OwnAddresses: own, ServerOptions: ServerOptions{PlusAddressTicketRef: true}},
			"Delivered-To: someone+55@elsewhere.example\nTo: someone+55@elsewhere.example\n\nhi\n", "", ""},
		{"tag with odd characters is not used", Options{OwnAddresses: own, ServerOptions: ServerOptions{PlusAddressTicketRef: true}},
			"To: \"support+a b\"@example.com\n\nhi\n", "", ""},
		{"empty tag", Options{OwnAddresses: own, ServerOptions: ServerOptions{PlusAddressTicketRef: true}},
			"To: support+@example.com\n\nhi\n", "", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := parseString(t, tt.raw, tt.opts)
			if m.TicketRef != tt.ref || m.TicketRefSource != tt.where {
				t.Errorf("ticket_ref %q from %q, want %q from %q", m.TicketRef, m.TicketRefSource, tt.ref, tt.where)
			}
		})
	}
}

func TestOriginalRecipient(t *testing.T) {
	own := []string{"support@example.com", "sales@example.com"}
	for _, tt := range []struct {
		name, head           string
		own                  []string
		addr, source, tagged string
	}{
		{"nothing", "To: a@x.example\n", own, "", "", ""},
		{"no addresses configured: To is not guessed", "To: support@example.com\n", nil, "", "", ""},
		{"no addresses configured: trace header", "Delivered-To: box@example.com\nTo: support@example.com\n", nil, "box@example.com", "delivered-to", ""},
		{"topmost Delivered-To that is own", "Delivered-To: box@example.com\nDelivered-To: sales@example.com\nDelivered-To: support@example.com\n", own, "sales@example.com", "delivered-to", ""},
		{"Envelope-To (Exim)", "Envelope-To: sales+eu@example.com\nTo: list@lists.example\n", own, "sales+eu@example.com", "envelope-to", "eu"},
		{"X-Forwarded-To", "X-Forwarded-To: support@example.com\n", own, "support@example.com", "x-forwarded-to", ""},
		{"configured order decides among To/Cc", "To: Support <SUPPORT@example.com>\nCc: sales@example.com\n", []string{"sales@example.com", "support@example.com"}, "sales@example.com", "cc", ""},
		{"case-insensitive, tag kept", "To: x@y.example, Support <Support+7@Example.com>\n", own, "Support+7@Example.com", "to", "7"},
		{"foreign trace header when no own address is anywhere", "Delivered-To: box@example.com\nTo: a@x.example\n", own, "box@example.com", "delivered-to", ""},
		{"own address in To beats a foreign trace header", "Delivered-To: box@example.com\nTo: sales@example.com\n", own, "sales@example.com", "to", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := parseString(t, tt.head+"\nbody\n", Options{OwnAddresses: tt.own})
			r := m.OriginalRecipient
			if tt.addr == "" {
				if r != nil {
					t.Errorf("original_recipient = %+v, want null", r)
				}
				return
			}
			if r == nil || r.Address != tt.addr || r.Source != tt.source || r.Tag != tt.tagged {
				t.Errorf("original_recipient = %+v, want %s from %s tag %q", r, tt.addr, tt.source, tt.tagged)
			}
		})
	}
}

func TestSplitSignature(t *testing.T) {
	for _, tt := range []struct {
		name, text, reply, sig string
	}{
		{"none", "Thanks, it works.\n\nJane", "Thanks, it works.\n\nJane", ""},
		{"delimiter", "Thanks.\n\n-- \nJane Doe\nACME", "Thanks.", "Jane Doe\nACME"},
		{"delimiter without space", "Thanks.\n--\nJane", "Thanks.", "Jane"},
		{"CRLF delimiter", "Thanks.\r\n-- \r\nJane", "Thanks.", "Jane"},
		{"first delimiter wins", "Thanks.\n-- \nJane\n-- \nACME", "Thanks.", "Jane\n-- \nACME"},
		{"long text after -- is no signature", "Intro\n--\n" + strings.Repeat("line\n", 40), "Intro\n--\n" + strings.Repeat("line\n", 40), ""},
		{"en iPhone", "Yes please.\n\nSent from my iPhone", "Yes please.", "Sent from my iPhone"},
		{"en iPad with trailing dot", "Yes.\n\nSent from my iPad.", "Yes.", "Sent from my iPad."},
		{"en Samsung", "Ok\n\nSent from my Samsung Galaxy smartphone.", "Ok", "Sent from my Samsung Galaxy smartphone."},
		{"en Outlook for Android", "Ok\n\nSent from Outlook for Android", "Ok", "Sent from Outlook for Android"},
		{"en Get Outlook", "Ok\n\nGet Outlook for Android", "Ok", "Get Outlook for Android"},
		{"en Mail for Windows", "Ok\n\nSent from Mail for Windows", "Ok", "Sent from Mail for Windows"},
		{"en Yahoo", "Ok\n\nSent from Yahoo Mail on Android", "Ok", "Sent from Yahoo Mail on Android"},
		{"de iPhone", "Passt.\n\nVon meinem iPhone gesendet", "Passt.", "Von meinem iPhone gesendet"},
		{"de Samsung", "Passt.\n\nVon meinem Samsung Galaxy Smartphone gesendet.", "Passt.", "Von meinem Samsung Galaxy Smartphone gesendet."},
		{"de Gesendet von", "Passt.\n\nGesendet von meinem Huawei Mobiltelefon", "Passt.", "Gesendet von meinem Huawei Mobiltelefon"},
		{"de Outlook", "Passt.\n\nOutlook für Android herunterladen", "Passt.", "Outlook für Android herunterladen"},
		{"fr iPhone", "D'accord.\n\nEnvoyé de mon iPhone", "D'accord.", "Envoyé de mon iPhone"},
		{"fr Outlook", "D'accord.\n\nObtenir Outlook pour iOS", "D'accord.", "Obtenir Outlook pour iOS"},
		{"es iPhone", "Vale.\n\nEnviado desde mi iPhone", "Vale.", "Enviado desde mi iPhone"},
		{"pt iPhone", "Ok.\n\nEnviado do meu iPhone", "Ok.", "Enviado do meu iPhone"},
		{"it iPhone", "Ok.\n\nInviato da iPhone", "Ok.", "Inviato da iPhone"},
		{"nl iPhone", "Ok.\n\nVerzonden vanaf mijn iPhone", "Ok.", "Verzonden vanaf mijn iPhone"},
		{"sv iPhone", "Ok.\n\nSkickat från min iPhone", "Ok.", "Skickat från min iPhone"},
		{"ru iPhone", "Хорошо.\n\nОтправлено с iPhone", "Хорошо.", "Отправлено с iPhone"},
		{"ja iPhone", "了解しました。\n\niPhoneから送信", "了解しました。", "iPhoneから送信"},
		{"ja Android", "了解しました。\n\nAndroid携帯からの送信", "了解しました。", "Android携帯からの送信"},
		{"zh iPhone", "好的。\n\n发自我的iPhone", "好的。", "发自我的iPhone"},
		{"zh-TW iPhone", "好的。\n\n從我的 iPhone 傳送", "好的。", "從我的 iPhone 傳送"},
		{"footer then delimiter", "Ok\n\nSent from my iPhone\n-- \nJane", "Ok", "Sent from my iPhone\n-- \nJane"},
		{"delimiter then footer", "Ok\n-- \nJane\nSent from my iPhone", "Ok", "Jane\nSent from my iPhone"},
		{"footer far from the end is text", "Sent from my iPhone\nline 1\nline 2\nline 3\nline 4", "Sent from my iPhone\nline 1\nline 2\nline 3\nline 4", ""},
		{"no device: an ordinary sentence", "I will check.\n\nSent from the office yesterday", "I will check.\n\nSent from the office yesterday", ""},
		{"sent without from is a sentence", "Done.\n\nSent the invoice to your phone", "Done.\n\nSent the invoice to your phone", ""},
		{"von without meinem is a sentence", "Ok.\n\nVon Montag an ist mein Handy kaputt", "Ok.\n\nVon Montag an ist mein Handy kaputt", ""},
		{"fi iPhone", "Ok.\n\nLähetetty iPhonesta", "Ok.", "Lähetetty iPhonesta"},
		{"pl", "Ok.\n\nWysłane z mojego smartfona Samsung", "Ok.", "Wysłane z mojego smartfona Samsung"},
		{"header-like line is no footer", "Hi\n\nVon: Max <max@outlook.com>", "Hi\n\nVon: Max <max@outlook.com>", ""},
		{"only a footer", "Sent from my iPhone", "", "Sent from my iPhone"},
		{"empty", "", "", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			reply, sig := splitSignature(tt.text)
			if reply != tt.reply || sig != tt.sig {
				t.Errorf("splitSignature(%q) = %q, %q; want %q, %q", tt.text, reply, sig, tt.reply, tt.sig)
			}
		})
	}
}

func TestParseAuthResults(t *testing.T) {
	for _, tt := range []struct {
		name, v string
		id      string
		want    string // method=result[/dkimDomain][/headerFrom] joined by " "
	}{
		{"RFC 8601 B.2 none", "example.org 1; none", "example.org", ""},
		{"RFC 8601 B.3 spf", "example.com; spf=pass smtp.mailfrom=example.net", "example.com", "spf=pass"},
		{"RFC 8601 B.4 several", "example.com; auth=pass (cram-md5) smtp.auth=sender@example.net; spf=pass smtp.mailfrom=example.net",
			"example.com", "auth=pass spf=pass"},
		{"RFC 8601 B.6 comments and versions", "example.com; dkim=pass (good signature) header.d=mail-router.example.net; dkim=fail (bad signature) header.d=newyork.example.com",
			"example.com", "dkim=pass/mail-router.example.net dkim=fail/newyork.example.com"},
		{"spaces around = and . and method version", "mx.example.com ; DKIM / 1 = PASS header . i = @Sub.Example.COM ; dmarc=fail header.from=\"bank.example\"",
			"mx.example.com", "dkim=pass/Sub.Example.COM dmarc=fail//bank.example"},
		{"quoted authserv-id and ; in quotes", "\"mx;1.example.com\"; spf=pass reason=\"a; b\"", "mx;1.example.com", "spf=pass"},
		{"comment before id", "(outer) mx.example.com (inner (nested)); arc=pass", "mx.example.com", "arc=pass"},
		{"no authserv-id (Exchange Online)", "spf=pass (sender IP is 192.0.2.1) smtp.mailfrom=a.example; dkim=pass header.d=a.example", "", ""},
		{"empty", "", "", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			id, res := parseAuthResults(tt.v)
			var got []string
			for _, r := range res {
				s := r.method + "=" + r.result
				if r.dkimDomain != "" || r.headerFrom != "" {
					s += "/" + r.dkimDomain
				}
				if r.headerFrom != "" {
					s += "/" + r.headerFrom
				}
				got = append(got, s)
			}
			if id != tt.id || strings.Join(got, " ") != tt.want {
				t.Errorf("parseAuthResults(%q) = %q, %q; want %q, %q", tt.v, id, strings.Join(got, " "), tt.id, tt.want)
			}
		})
	}
}

func TestAuthTrust(t *testing.T) {
	head := "Authentication-Results: mx.example.com; spf=softfail smtp.mailfrom=a.example; dkim=fail header.d=a.example; dkim=pass header.d=esp.example\n" +
		"Authentication-Results: MX.EXAMPLE.COM; dmarc=pass header.from=A.example\n" +
		"Authentication-Results: other.example; spf=pass; dmarc=pass; arc=pass\n" +
		"X-Spam-Status: No, score=-0.4 required=5.0\n\nbody\n"
	for _, tt := range []struct {
		name    string
		trusted []string
		want    string
	}{
		{"none configured: none trusted", nil, `{"spam_score":-0.4,"spam_flag":false}`},
		{"untrusted id only", []string{"elsewhere.example"}, `{"spam_score":-0.4,"spam_flag":false}`},
		{"trusted, merged, case-insensitive", []string{"mx.example.com"},
			`{"authserv_id":"mx.example.com","spf":"softfail","dkim":"pass","dkim_domains":["esp.example"],"dmarc":"pass","dmarc_domain":"a.example","spam_score":-0.4,"spam_flag":false}`},
		{"other trusted", []string{"other.example"}, `{"authserv_id":"other.example","spf":"pass","dmarc":"pass","arc":"pass","spam_score":-0.4,"spam_flag":false}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := parseString(t, head, Options{ServerOptions: ServerOptions{TrustedAuthservIDs: tt.trusted}})
			got, _ := json.Marshal(m.Auth)
			if string(got) != tt.want {
				t.Errorf("auth = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestSpamHeaders(t *testing.T) {
	for _, tt := range []struct{ head, want string }{
		{"X-Spam-Flag: YES\nX-Spam-Score: 12.5\n", `{"spam_score":12.5,"spam_flag":true}`},
		{"X-Spam-Flag: NO\nX-Spam-Status: Yes, score=9.0\n", `{"spam_score":9,"spam_flag":false}`},
		{"X-Spam-Status: Yes, hits=6.1 required=5.0 tests=X\n", `{"spam_score":6.1,"spam_flag":true}`},
		{"X-Spam-Score: 5.30 / 15.00\n", `{"spam_score":5.3}`},
		{"X-Spam-Score: ***\nX-Spam-Flag: maybe\n", `{}`},
		{"Subject: x\n", `{}`},
	} {
		m := parseString(t, tt.head+"\nbody\n", Options{})
		if got, _ := json.Marshal(m.Auth); string(got) != tt.want {
			t.Errorf("%q: auth = %s, want %s", tt.head, got, tt.want)
		}
	}
}

func TestHeaderList(t *testing.T) {
	raw := "Received: from a\n\tby b; Mon, 1 Dec 2026 10:00:00 +0000\nMESSAGE-ID: <x@y>\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\n  und mehr\nX-Custom:  spaced  \nX-Custom: second\n\nbody\n"
	m := parseString(t, raw, Options{})
	got, _ := json.Marshal(m.Headers)
	want := `[{"name":"Received","value":"from a by b; Mon, 1 Dec 2026 10:00:00 +0000"},{"name":"MESSAGE-ID","value":"\u003cx@y\u003e"},{"name":"Subject","value":"Grüße und mehr"},{"name":"X-Custom","value":"spaced"},{"name":"X-Custom","value":"second"}]`
	if string(got) != want {
		t.Errorf("headers = %s\nwant      %s", got, want)
	}

	// bounded: fields beyond the limit are left out, with a warning
	var b strings.Builder
	for i := 0; i < 100; i++ {
		fmt.Fprintf(&b, "X-Filler-%02d: %s\n", i, strings.Repeat("v", 90))
	}
	b.WriteString("\nbody\n")
	m = parseString(t, b.String(), Options{ServerOptions: ServerOptions{MaxHeaderListBytes: 1000}})
	if len(m.Headers) != 9 || !hasWarnCode(m, WarnHeadersTruncated) {
		t.Errorf("%d headers listed (want 9 of 100 bytes each within 1000), warnings %+v", len(m.Headers), m.Warnings)
	}
	m = parseString(t, b.String(), Options{})
	if len(m.Headers) != 100 || hasWarnCode(m, WarnHeadersTruncated) {
		t.Errorf("default limit: %d headers, warnings %+v", len(m.Headers), m.Warnings)
	}
	big := "X-Big: " + strings.Repeat("x", DefaultMaxHeaderListBytes) + "\nSubject: after\n\nbody\n"
	m = parseString(t, big, Options{})
	if len(m.Headers) != 0 || !hasWarnCode(m, WarnHeadersTruncated) || m.Subject != "after" {
		t.Errorf("oversized field: %d headers, subject %q, warnings %+v", len(m.Headers), m.Subject, m.Warnings)
	}
}

func hasWarnCode(m *Message, code string) bool {
	for _, w := range m.Warnings {
		if w.Code == code {
			return true
		}
	}
	return false
}

func TestForServer(t *testing.T) {
	srv := config.Server{Addresses: []string{"a@x.example"}, PlusAddressTicketRef: true, TrustedAuthservIDs: []string{"mx.x.example"}}
	o := Options{MaxParts: 3}.ForServer(srv)
	if o.MaxParts != 3 || len(o.OwnAddresses) != 1 || !o.PlusAddressTicketRef || o.TrustedAuthservIDs[0] != "mx.x.example" {
		t.Errorf("ForServer = %+v", o)
	}
	srv.TrustedAuthservIDs[0] = "changed"
	if o.TrustedAuthservIDs[0] != "mx.x.example" {
		t.Error("ForServer shares the server's slice")
	}
}

func TestExtraNeverNull(t *testing.T) {
	m := parseString(t, "Subject: x\n\nbody\n", Options{})
	got, _ := json.Marshal(m)
	for _, want := range []string{`"bcc":[]`, `"headers":[{`, `"original_recipient":null`, `"signature":""`, `"auth":{}`, `"ticket_ref_source":""`} {
		if !strings.Contains(string(got), want) {
			t.Errorf("JSON lacks %s: %s", want, got)
		}
	}
}

// FuzzSplitSignature: never panics, and the two parts come from the text
// in order.
func FuzzSplitSignature(f *testing.F) {
	for _, s := range []string{"", "a\n-- \nb", "--", "x\nSent from my iPhone", "\n\n\n", "iPhoneから送信\n--\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		reply, sig := splitSignature(text)
		if sig == "" {
			if reply != text {
				t.Fatalf("no signature but reply %q != text %q", reply, text)
			}
			return
		}
		i := strings.Index(text, reply)
		if i < 0 || !strings.Contains(text[i+len(reply):], sig) {
			t.Fatalf("parts %q, %q not in order in %q", reply, sig, text)
		}
	})
}

// FuzzParseAuthResults: never panics; an id is never empty with results.
func FuzzParseAuthResults(f *testing.F) {
	for _, s := range []string{"", "mx; spf=pass", "\"a\\\"b\"; dkim=pass header.d=x (c (d)) ; none", "spf=pass", "(((", "\"", "a;=;b=;=c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		id, res := parseAuthResults(v)
		if id == "" && len(res) > 0 {
			t.Fatalf("results %v without an authserv-id", res)
		}
	})
}
