package parser

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailworker/mailworker/config"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

const corpusDir = "../../shared/corpus"

// TestGolden parses every testdata/*.eml and compares the Message with
// testdata/NAME.golden.json (refresh with go test ./parser -update).
func TestGolden(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.eml")
	if len(files) < 12 {
		t.Fatalf("want at least 12 testdata mails, have %d", len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			m, err := Parse(bytes.NewReader(raw), goldenOptions(t, f))
			if err != nil {
				t.Fatalf("Parse(%s) = %v", f, err)
			}
			got, _ := json.MarshalIndent(m, "", "  ")
			golden := strings.TrimSuffix(f, ".eml") + ".golden.json"
			if *update {
				if err := os.WriteFile(golden, append(got, '\n'), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./parser -update)", err)
			}
			if !bytes.Equal(bytes.TrimSpace(want), got) {
				t.Errorf("Parse(%s) differs from %s:\n%s", f, golden, got)
			}
		})
	}
}

// goldenOptions are the options a testdata mail is parsed with: own
// address support@example.com, or what NAME.options.json next to it says
// (the per-server settings: addresses, plus_address_ticket_ref,
// trusted_authserv_ids).
func goldenOptions(t *testing.T, eml string) Options {
	t.Helper()
	o := Options{OwnAddresses: []string{"support@example.com"}}
	raw, err := os.ReadFile(strings.TrimSuffix(eml, ".eml") + ".options.json")
	if errors.Is(err, os.ErrNotExist) {
		return o
	}
	if err != nil {
		t.Fatal(err)
	}
	var srv struct {
		Addresses            []string `json:"addresses"`
		PlusAddressTicketRef bool     `json:"plus_address_ticket_ref"`
		TrustedAuthservIDs   []string `json:"trusted_authserv_ids"`
	}
	if err := json.Unmarshal(raw, &srv); err != nil {
		t.Fatalf("%s.options.json: %v", eml, err)
	}
	return o.ForServer(config.Server{Addresses: srv.Addresses, PlusAddressTicketRef: srv.PlusAddressTicketRef, TrustedAuthservIDs: srv.TrustedAuthservIDs})
}

// TestFacts checks the facts each hand-written mail was written for, so a
// wrong golden file cannot hide a regression.
func TestFacts(t *testing.T) {
	tests := []struct {
		file  string
		check func(m *Message) error
	}{
		{"plain_reply.eml", func(m *Message) error {
			return all(
				eq("ticket", m.TicketRef, "4711"),
				eq("subject", m.Subject, "Re: [Ticket#4711] printer on floor 3"),
				eq("reply", m.ReplyText, "It still jams after the new toner.\n\nJane"),
				eq("refs", strings.Join(m.References, " "), "root@example.com orig-1@example.com"),
				eq("from name", m.From.Name, "Doe, Jane"))
		}},
		{"alternative_qp.eml", func(m *Message) error {
			return all(eq("subject", m.Subject, "Grüße aus Zürich und mehr"),
				eq("text", m.Text, "Grüße, the VPN drops every ten minutes."),
				eq("from", m.From.Name, "René Müller"), eq("to", len(m.To), 2))
		}},
		{"related_cid.eml", func(m *Message) error {
			return all(eq("text", m.Text, "Café menu"), eq("inline", m.Attachments[0].Inline, true),
				eq("cid", m.Attachments[0].ContentID, "logo@x"), eq("size", m.Attachments[0].Size, int64(40)))
		}},
		{"rfc2231_attachment.eml", func(m *Message) error {
			return all(eq("name0", m.Attachments[0].Filename, "Rechnung März 2026.pdf"),
				eq("name1", m.Attachments[1].Filename, "Zähler.csv"), eq("type1", m.Attachments[1].ContentType, "text/csv"))
		}},
		{"forwarded.eml", func(m *Message) error {
			return all(eq("name", m.Attachments[0].Filename, "Kaputt_defekt.eml"), eq("type", m.Attachments[0].ContentType, "message/rfc822"))
		}},
		{"bounce.eml", func(m *Message) error {
			if m.BounceInfo == nil {
				return errors.New("no bounce_info")
			}
			b := m.BounceInfo
			return all(eq("bounce", m.Bounce, true), eq("rcpt", strings.Join(b.FailedRecipients, ","), "gone@example.net"),
				eq("status", b.Status, "5.1.1"), eq("orig", b.OriginalMessageID, "out-7@example.com"), eq("action", b.Action, "failed"))
		}},
		{"autoreply_de.eml", func(m *Message) error {
			return all(eq("auto", m.AutoReply, true), eq("reply", m.ReplyText, "Ich bin bis 30.11. nicht im Büro."))
		}},
		{"broken.eml", func(m *Message) error {
			return all(eq("date", m.Date == nil, true),
				hasWarn(m, WarnBadDate), hasWarn(m, WarnUnknownCharset), hasWarn(m, WarnBadBase64),
				hasWarn(m, WarnUnknownTransferEncoding), hasWarn(m, WarnMissingFinalBoundary), hasWarn(m, WarnBadEncodedWord),
				eq("b64", m.Attachments[0].Size, int64(9)), eq("text", m.Text, "Body in an unknown charset."))
		}},
		{"uuencode.eml", func(m *Message) error {
			return all(eq("name", m.Attachments[0].Filename, "hello.txt"), eq("size", m.Attachments[0].Size, int64(24)),
				eq("text", strings.Contains(m.Text, "begin 644"), false))
		}},
		{"tnef.eml", func(m *Message) error {
			return all(eq("n", len(m.Attachments), 2), eq("name0", m.Attachments[0].Filename, "Quartalsbericht Zürich.txt"),
				eq("type0", m.Attachments[0].ContentType, "text/plain"), eq("name1", m.Attachments[1].Filename, "second.bin"),
				eq("size1", m.Attachments[1].Size, int64(16)))
		}},
		{"groups_outlook.eml", func(m *Message) error {
			return all(eq("to", len(m.To), 2), eq("bob", m.To[1].Name, `Bob "B" Smith`), eq("cc", m.Cc[0].Name, "Jörg"),
				eq("ticket", m.TicketRef, "2042"), eq("subject", m.Subject, "RE: [Request ID :##2042##] Zugang für neuen Kollegen"),
				eq("reply", m.ReplyText, "Bitte auch für Bob freischalten."))
		}},
		{"loop_bulk.eml", func(m *Message) error {
			return all(eq("loop", m.Loop, true), eq("auto", m.AutoReply, true), eq("text", m.Text, "We received your request & will answer soon."))
		}},
		{"nested_digest.eml", func(m *Message) error {
			return all(eq("n", len(m.Attachments), 2), eq("name", m.Attachments[1].Filename, "second post.eml"))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join("testdata", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			m, err := Parse(bytes.NewReader(raw), Options{OwnAddresses: []string{"support@example.com"}})
			if err != nil {
				t.Fatalf("Parse(%s) = %v", tt.file, err)
			}
			if err := tt.check(m); err != nil {
				t.Errorf("Parse(%s): %v", tt.file, err)
			}
		})
	}
}

func eq[T comparable](what string, got, want T) error {
	if got != want {
		return fmt.Errorf("%s = %#v, want %#v", what, got, want)
	}
	return nil
}

func hasWarn(m *Message, code string) error {
	for _, w := range m.Warnings {
		if w.Code == code {
			return nil
		}
	}
	return fmt.Errorf("no warning %s in %v", code, m.Warnings)
}

func all(errs ...error) error { return errors.Join(errs...) }

// TestEdgeCases covers go-message's known pitfalls and this parser's own
// recovery paths, one small message each.
func TestEdgeCases(t *testing.T) {
	tests := []struct {
		name  string
		raw   string
		opts  Options
		check func(m *Message) error
	}{
		{"empty header only", "Subject: x\n", Options{}, func(m *Message) error {
			return all(eq("subject", m.Subject, "x"), eq("text", m.Text, ""), hasWarn(m, WarnMissingDate))
		}},
		{"mbox From line", "From a@b Sat Apr 15 10:00:00 2023\nFrom: a@b\nSubject: s\n\nbody\n", Options{}, func(m *Message) error {
			return all(eq("from", m.From.Address, "a@b"), eq("text", m.Text, "body\n"))
		}},
		{"no blank line after header", "Subject: s\nThis is body\n", Options{}, func(m *Message) error {
			return all(eq("text", m.Text, "This is body\n"), hasWarn(m, WarnMissingHeaderSeparator))
		}},
		{"stray line inside header", "Subject: s\nthis is no field\nTo: a@b\n\nbody", Options{}, func(m *Message) error {
			return all(eq("to", len(m.To), 1), eq("text", m.Text, "body"), hasWarn(m, WarnBadHeader))
		}},
		{"multipart without boundary", "Content-Type: multipart/mixed\n\nhello\n", Options{}, func(m *Message) error {
			return all(eq("text", m.Text, "hello\n"), hasWarn(m, WarnMissingBoundary))
		}},
		{"boundary never seen", "Content-Type: multipart/mixed; boundary=zz\n\nhello\n", Options{}, func(m *Message) error {
			return all(eq("text", m.Text, "hello\n"), hasWarn(m, WarnMissingBoundary))
		}},
		{"final boundary with junk", "Content-Type: multipart/mixed; boundary=b\n\n--b\n\nx\n--b-->\nevil\n", Options{}, func(m *Message) error {
			return eq("text", m.Text, "x")
		}},
		{"unknown transfer encoding at top", "Content-Transfer-Encoding: x-foo\n\nraw\n", Options{}, func(m *Message) error {
			return all(eq("text", m.Text, "raw\n"), hasWarn(m, WarnUnknownTransferEncoding))
		}},
		{"x-uuencode part", "Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: x-uuencode\n\nbegin 644 a.bin\n#86)C\n`\nend\n--b--\n", Options{}, func(m *Message) error {
			return all(eq("name", m.Attachments[0].Filename, "a.bin"), eq("size", m.Attachments[0].Size, int64(3)))
		}},
		{"bad date", "Date: 32 Foo 2020\n\n", Options{}, func(m *Message) error {
			return all(eq("date", m.Date == nil, true), hasWarn(m, WarnBadDate))
		}},
		{"obsolete date", "Date: Thu,\n      13\n        Feb\n          1969\n      23:32\n               -0330 (Newfoundland Time)\n\n", Options{}, func(m *Message) error {
			if m.Date == nil {
				return errors.New("date not parsed")
			}
			return eq("date", m.Date.UTC().Format(time.RFC3339), "1969-02-14T03:02:00Z")
		}},
		{"subject folding and words", "Subject: =?utf-8?q?a?=\n  =?utf-8?q?b?=   c\n\n", Options{}, func(m *Message) error {
			return eq("subject", m.Subject, "ab c")
		}},
		{"raw utf-8 header", "From: Zoë <zoë@example.de>\nSubject: Grüße\n\n", Options{}, func(m *Message) error {
			return all(eq("subject", m.Subject, "Grüße"), eq("addr", m.From.Address, "zoë@example.de"), eq("name", m.From.Name, "Zoë"))
		}},
		{"latin1 8-bit header", "Subject: Gr\xfc\xdfe\nContent-Type: text/plain; charset=iso-8859-1\n\n", Options{}, func(m *Message) error {
			return eq("subject", m.Subject, "Grüße")
		}},
		{"ids without brackets", "Message-ID: abc@x\nReferences: <a@x> <b@x>\nIn-Reply-To: <b@x> (comment)\n\n", Options{}, func(m *Message) error {
			return all(eq("id", m.MessageID, "abc@x"), eq("irt", m.InReplyTo, "b@x"), eq("refs", len(m.References), 2))
		}},
		{"ticket patterns", "Subject: Re: [#77] x [Ticket#5]\n\n", Options{}, func(m *Message) error {
			return eq("ticket", m.TicketRef, "5")
		}},
		{"auto-submitted no", "Auto-Submitted: no\nSubject: Out of office? no, a question\n\n", Options{}, func(m *Message) error {
			return eq("auto", m.AutoReply, true) // vacation subject as last resort
		}},
		{"precedence list is not auto", "Precedence: list\nSubject: hello\n\n", Options{}, func(m *Message) error {
			return eq("auto", m.AutoReply, false)
		}},
		{"null return path on auto reply is no bounce", "Return-Path: <>\nAuto-Submitted: auto-replied\nSubject: Undeliverable? no\n\n", Options{}, func(m *Message) error {
			return all(eq("bounce", m.Bounce, false), eq("auto", m.AutoReply, true))
		}},
		{"loop by own address", "From: Me <ME@example.com>\n\n", Options{OwnAddresses: []string{"me@example.com"}}, func(m *Message) error {
			return eq("loop", m.Loop, true)
		}},
		{"text truncated", "Content-Type: text/plain\n\n" + strings.Repeat("é", 100), Options{MaxBodyBytes: 11}, func(m *Message) error {
			return all(eq("text", m.Text, "ééééé"), hasWarn(m, WarnTextTruncated))
		}},
		{"too many parts", "Content-Type: multipart/mixed; boundary=b\n\n" + strings.Repeat("--b\nContent-Type: application/x\n\nx\n", 10) + "--b--\n", Options{MaxParts: 4}, func(m *Message) error {
			return all(eq("n", len(m.Attachments), 3), hasWarn(m, WarnTooManyParts))
		}},
		{"too deep", nested(30), Options{MaxDepth: 5}, func(m *Message) error {
			return hasWarn(m, WarnTooDeep)
		}},
		{"message too large", "Subject: s\n\n" + strings.Repeat("x", 1000), Options{MaxMessageBytes: 100}, func(m *Message) error {
			return hasWarn(m, WarnMessageTooLarge)
		}},
		{"header too large", "Subject: s\nX-Big: " + strings.Repeat("y", 2000) + "\nTo: a@b\n\nbody", Options{MaxHeaderBytes: 100}, func(m *Message) error {
			return all(hasWarn(m, WarnHeaderTooLarge), eq("text", m.Text, "body"))
		}},
		{"bad tnef kept", "Content-Type: application/ms-tnef; name=winmail.dat\nContent-Transfer-Encoding: base64\n\naGVsbG8=\n", Options{}, func(m *Message) error {
			return all(eq("name", m.Attachments[0].Filename, "winmail.dat"), eq("size", m.Attachments[0].Size, int64(5)), hasWarn(m, WarnBadTNEF))
		}},
		{"groups flattened", "To: A: a@x, b@x;, C: ;\n\n", Options{}, func(m *Message) error {
			return eq("to", len(m.To), 2)
		}},
		{"obsolete route and spaces", "To: Mary <@machine.tld:mary@example.net>, , jdoe@test   . example\n\n", Options{}, func(m *Message) error {
			return all(eq("n", len(m.To), 2), eq("jdoe", m.To[1].Address, "jdoe@test.example"))
		}},
		{"html charset from meta", "Content-Type: text/html\n\n<meta charset=\"iso-8859-1\"><p>caf\xe9</p>", Options{}, func(m *Message) error {
			return eq("text", m.Text, "café")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Parse(strings.NewReader(tt.raw), tt.opts)
			if err != nil {
				t.Fatalf("Parse = %v", err)
			}
			if err := tt.check(m); err != nil {
				t.Errorf("Parse(%q): %v", clip(tt.raw, 60), err)
			}
		})
	}
}

func nested(n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "Content-Type: multipart/mixed; boundary=b%d\n\n--b%d\n", i, i)
	}
	b.WriteString("Content-Type: text/plain\n\ndeep\n")
	return b.String()
}

func TestParseErrors(t *testing.T) {
	if _, err := Parse(strings.NewReader(""), Options{}); !errors.Is(err, ErrEmpty) {
		t.Errorf("Parse(empty) = %v, want ErrEmpty", err)
	}
	boom := errors.New("connection reset")
	r := io.MultiReader(strings.NewReader("Subject: x\n\nabc"), errReader{boom})
	if _, err := Parse(r, Options{}); !errors.Is(err, ErrRead) || !errors.Is(err, boom) {
		t.Errorf("Parse(failing reader) = %v, want ErrRead wrapping %v", err, boom)
	}
	raw, _ := os.ReadFile("testdata/rfc2231_attachment.eml")
	if _, err := Parse(bytes.NewReader(raw), Options{Sink: failSink{}}); !errors.Is(err, ErrSink) {
		t.Errorf("Parse(failing sink) = %v, want ErrSink", err)
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

type failSink struct{}

func (failSink) Put(Attachment, io.Reader) (string, error) { return "", errors.New("store down") }

// memSink keeps what it is given, to check that the sink sees the same
// bytes the hash covers.
type memSink struct{ got map[string][]byte }

func (s *memSink) Put(a Attachment, body io.Reader) (string, error) {
	b, err := io.ReadAll(body)
	if err != nil {
		return "", err
	}
	key := fmt.Sprintf("obj-%d", len(s.got))
	s.got[key] = b
	return key, nil
}

func TestSink(t *testing.T) {
	raw, _ := os.ReadFile("testdata/rfc2231_attachment.eml")
	s := &memSink{got: map[string][]byte{}}
	m, err := Parse(bytes.NewReader(raw), Options{Sink: s})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range m.Attachments {
		b, ok := s.got[a.Object]
		if !ok {
			t.Fatalf("attachment %q: object %q not in sink", a.Filename, a.Object)
		}
		sum := sha256.Sum256(b)
		if hex.EncodeToString(sum[:]) != a.SHA256 || int64(len(b)) != a.Size {
			t.Errorf("attachment %q: sink got %d bytes, metadata says %d / %s", a.Filename, len(b), a.Size, a.SHA256)
		}
	}
}

func TestOptionsFromConfig(t *testing.T) {
	o, err := OptionsFromConfig(config.Parser{MaxParts: 7, TicketPatterns: []string{`CASE-(\d+)`}})
	if err != nil {
		t.Fatal(err)
	}
	if o.MaxParts != 7 || o.MaxDepth != DefaultMaxDepth || o.LoopHeader != DefaultLoopHeader {
		t.Errorf("OptionsFromConfig = %+v", o)
	}
	m, _ := Parse(strings.NewReader("Subject: Re: CASE-12 [#3]\n\n"), o)
	if m.TicketRef != "12" {
		t.Errorf("TicketRef = %q, want 12", m.TicketRef)
	}
	if _, err := OptionsFromConfig(config.Parser{TicketPatterns: []string{`(`}}); err == nil {
		t.Error("OptionsFromConfig(bad pattern) = nil error")
	}
	o, err = OptionsFromConfig(config.Parser{TicketPatterns: []string{`(Case|Ticket)-(?P<ref>\d+)`}})
	if err != nil {
		t.Fatal(err)
	}
	if m, _ := Parse(strings.NewReader("Subject: Ticket-9\n\n"), o); m.TicketRef != "9" {
		t.Errorf("TicketRef with a named group = %q, want 9", m.TicketRef)
	}
}

func TestReplyText(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"english", "New.\n\nOn Mon, 1 Jan 2024, A <a@x> wrote:\n> old", "New."},
		{"english wrapped", "New.\n\nOn Mon, 1 Jan 2024 at 10:00, Somebody With A Long Name\n<a@x> wrote:\n> old", "New."},
		{"outlook", "New.\n\n-----Original Message-----\nFrom: x\n", "New."},
		{"outlook block", "New.\n\nFrom: A <a@x>\nSent: Monday\nTo: b\n", "New."},
		{"german", "Neu.\n\nAm 01.01.2024 um 10:00 schrieb A <a@x>:\n> alt", "Neu."},
		{"french", "Nouveau.\n\nLe lun. 1 janv. 2024 à 10:00, A <a@x> a écrit :\n> vieux", "Nouveau."},
		{"spanish", "Nuevo.\n\nEl lun, 1 ene 2024 a las 10:00, A (<a@x>) escribió:\n> viejo", "Nuevo."},
		{"portuguese", "Novo.\n\nEm seg., 1 de jan. de 2024 às 10:00, A <a@x> escreveu:\n> velho", "Novo."},
		{"dutch", "Nieuw.\n\nOp ma 1 jan. 2024 om 10:00 schreef A <a@x>:\n> oud", "Nieuw."},
		{"japanese", "新しい。\n\n2024年1月1日(月) 10:00 A <a@x>:\n\n-----元のメッセージ-----\n古い", "新しい。"},
		{"interleaved quotes", "> q1\nanswer 1\n> q2\nanswer 2", "answer 1\nanswer 2"},
		{"no quote", "Just text.", "Just text."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := replyText(tt.in); got != tt.want {
				t.Errorf("replyText(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestDecoders(t *testing.T) {
	b64 := []struct{ in, want string }{
		{"aGVsbG8=", "hello"},
		{"aGVs\r\nbG8=", "hello"},
		{"aGVs!bG8", "hello"},
		{"aGVsbG8=aGVsbG8=", "hellohello"},
	}
	for _, tt := range b64 {
		got, _ := io.ReadAll(newBase64Reader(strings.NewReader(tt.in), nil))
		if string(got) != tt.want {
			t.Errorf("base64 %q = %q, want %q", tt.in, got, tt.want)
		}
	}
	qp := []struct{ in, want string }{
		{"a=3Db", "a=b"},
		{"soft=\nbreak", "softbreak"},
		{"trailing   \nx", "trailing\nx"},
		{"bad =ZZ escape", "bad =ZZ escape"},
	}
	for _, tt := range qp {
		got, _ := io.ReadAll(newQPReader(strings.NewReader(tt.in), nil))
		if string(got) != tt.want {
			t.Errorf("qp %q = %q, want %q", tt.in, got, tt.want)
		}
	}
	if got, _ := io.ReadAll(newQPReader(strings.NewReader("crlf=\r\nok\r\n"), nil)); string(got) != "crlfok\r\n" {
		t.Errorf("qp crlf = %q", got)
	}
}

// corpusFiles lists ../shared/corpus/*.eml or skips.
func corpusFiles(tb testing.TB) []string {
	files, _ := filepath.Glob(filepath.Join(corpusDir, "*.eml"))
	if len(files) == 0 {
		tb.Skipf("corpus not found at %s (it lives outside the repository); skipping", corpusDir)
	}
	return files
}

// TestCorpus parses the shared corpus and checks the fields its NNN.json
// expectations name that map one to one onto Message (the full scorer is
// ../shared/corpus/check_parse.py, run against `mailworker parse`).
func TestCorpus(t *testing.T) {
	for _, f := range corpusFiles(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			m, err := Parse(bytes.NewReader(raw), Options{})
			if err != nil {
				t.Fatalf("Parse(%s) = %v", f, err)
			}
			var exp map[string]any
			jb, err := os.ReadFile(strings.TrimSuffix(f, ".eml") + ".json")
			if err != nil {
				return
			}
			if err := json.Unmarshal(jb, &exp); err != nil {
				t.Fatal(err)
			}
			if v, ok := exp["subject"].(string); ok && normalizeSpace(v) != m.Subject {
				t.Errorf("subject = %q, want %q", m.Subject, v)
			}
			if v, ok := exp["message_id"].(string); ok && strings.Trim(v, "<>") != m.MessageID {
				t.Errorf("message_id = %q, want %q", m.MessageID, v)
			}
			if v, ok := exp["auto_reply"].(bool); ok && v != m.AutoReply {
				t.Errorf("auto_reply = %v, want %v", m.AutoReply, v)
			}
			if v, ok := exp["bounce"].(bool); ok && v != m.Bounce {
				t.Errorf("bounce = %v, want %v", m.Bounce, v)
			}
			if atts, ok := exp["attachments"].([]any); ok {
				named := 0
				for _, a := range atts {
					if a.(map[string]any)["filename"] != nil {
						named++
					}
				}
				if len(m.Attachments) < named {
					t.Errorf("%d attachments, want at least %d", len(m.Attachments), named)
				}
			}
		})
	}
}

func seeds(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.eml")
	more, _ := filepath.Glob(filepath.Join(corpusDir, "*.eml"))
	for _, name := range append(files, more...) {
		if b, err := os.ReadFile(name); err == nil && len(b) < 64*1024 {
			f.Add(b)
		}
	}
}

// FuzzParse: Parse never panics, never errors on non-empty input, and its
// output always marshals and keeps the never-null lists non-null.
func FuzzParse(f *testing.F) {
	seeds(f)
	f.Fuzz(func(t *testing.T, raw []byte) {
		m, err := Parse(bytes.NewReader(raw), Options{MaxParts: 50, MaxDepth: 8, MaxBodyBytes: 4096})
		if err != nil {
			if errors.Is(err, ErrEmpty) {
				return
			}
			t.Fatalf("Parse = %v", err)
		}
		if m.References == nil || m.To == nil || m.Cc == nil || m.ReplyTo == nil || m.Attachments == nil || m.Warnings == nil {
			t.Fatalf("a never-null list is nil: %+v", m)
		}
		if len(m.Text) > 4096 || len(m.HTML) > 4096 {
			t.Fatalf("body over the limit: text %d html %d", len(m.Text), len(m.HTML))
		}
		if _, err := json.Marshal(m); err != nil {
			t.Fatalf("json.Marshal = %v", err)
		}
	})
}

// FuzzTNEF: DecodeTNEF never panics and its files lie inside the input.
func FuzzTNEF(f *testing.F) {
	raw, _ := os.ReadFile("testdata/tnef.eml")
	if i := bytes.Index(raw, []byte("base64\n\n")); i >= 0 {
		enc := raw[i+len("base64\n\n"):]
		if j := bytes.Index(enc, []byte("\n--t--")); j >= 0 {
			if b, err := base64.StdEncoding.DecodeString(strings.ReplaceAll(string(enc[:j]), "\n", "")); err == nil {
				f.Add(b)
			}
		}
	}
	f.Add([]byte{0x78, 0x9f, 0x3e, 0x22, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		files, _ := DecodeTNEF(b)
		total := 0
		for _, fl := range files {
			total += len(fl.Data)
		}
		if total > len(b) {
			t.Fatalf("files hold %d bytes from %d input bytes", total, len(b))
		}
	})
}

// TestMemory50MB parses a generated message with a 50 MB base64
// attachment, produced through io.Pipe so it never exists whole, and checks
// that the Go heap stays far below the attachment size.
func TestMemory50MB(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	const size = 50 << 20
	pr, pw := io.Pipe()
	go func() {
		fmt.Fprint(pw, "From: a@example.com\nSubject: big\nContent-Type: multipart/mixed; boundary=B\n\n--B\nContent-Type: text/plain\n\nsee attachment\n--B\nContent-Type: application/octet-stream; name=big.bin\nContent-Transfer-Encoding: base64\n\n")
		enc := base64.NewEncoder(base64.StdEncoding, &lineWriter{w: pw})
		chunk := make([]byte, 57*1024)
		for i := range chunk {
			chunk[i] = byte(i * 7)
		}
		for n := 0; n < size; n += len(chunk) {
			enc.Write(chunk[:min(len(chunk), size-n)])
		}
		enc.Close()
		fmt.Fprint(pw, "\n--B--\n")
		pw.Close()
	}()

	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	var peak atomic.Uint64
	done := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	// the raw message (base64 of 50 MB) is larger than the default
	// 50 MB message limit
	m, err := Parse(pr, Options{MaxMessageBytes: 100 << 20})
	close(done)
	<-sampled
	if err != nil {
		t.Fatal(err)
	}
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if len(m.Attachments) != 1 || m.Attachments[0].Size != size {
		t.Fatalf("attachments = %+v, want one of %d bytes", m.Attachments, size)
	}
	const limit = 32 << 20
	t.Logf("heap in use: base %d MB, peak %d MB; allocated during parse %d MB", base.HeapInuse>>20, peak.Load()>>20, (after.TotalAlloc-base.TotalAlloc)>>20)
	if p := peak.Load(); p > limit {
		t.Errorf("peak HeapInuse %d MB, want under %d MB", p>>20, limit>>20)
	}
	if grow := after.TotalAlloc - base.TotalAlloc; grow > size/2 {
		t.Errorf("allocated %d MB while parsing, want under %d MB (the attachment must not be buffered)", grow>>20, size>>21)
	}
}

// lineWriter breaks base64 output into 76-character lines.
type lineWriter struct {
	w   io.Writer
	col int
}

func (l *lineWriter) Write(b []byte) (int, error) {
	n := len(b)
	for len(b) > 0 {
		k := min(76-l.col, len(b))
		if _, err := l.w.Write(b[:k]); err != nil {
			return 0, err
		}
		b, l.col = b[k:], l.col+k
		if l.col == 76 {
			if _, err := l.w.Write([]byte("\n")); err != nil {
				return 0, err
			}
			l.col = 0
		}
	}
	return n, nil
}

// TestHostileInputs: inputs built to make a naive parser quadratic or
// unbounded still parse, within the limits.
func TestHostileInputs(t *testing.T) {
	tests := []struct {
		name string
		raw  string
	}{
		{"many begin lines", "Subject: s\n\n" + strings.Repeat("begin 644 a\nM86)C\n", 40000)},
		{"one huge header line", "Subject: " + strings.Repeat("x", 3<<20) + "\n\nbody"},
		{"many boundaries", "Content-Type: multipart/mixed; boundary=b\n\n" + strings.Repeat("--b\n\n", 100000)},
		{"deep nesting", nested(5000)},
		{"many encoded words", "Subject: " + strings.Repeat("=?utf-8?q?a?= =?x?q?b", 20000) + "\n\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Parse(strings.NewReader(tt.raw), Options{})
			if err != nil {
				t.Fatalf("Parse = %v", err)
			}
			if len(m.Text) > DefaultMaxBodyBytes || len(m.Warnings) > 100 {
				t.Errorf("text %d bytes, %d warnings: over the limits", len(m.Text), len(m.Warnings))
			}
		})
	}
}

// TestConcurrentParse: Parse calls share only pooled buffers and compiled
// patterns; parallel runs must give what a single run gives (run with -race).
func TestConcurrentParse(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.eml")
	want := map[string]string{}
	for _, f := range files {
		raw, _ := os.ReadFile(f)
		m, err := Parse(bytes.NewReader(raw), Options{})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(m)
		want[f] = string(b)
	}
	errs := make(chan error, 8*len(files))
	for g := 0; g < 8; g++ {
		go func() {
			for _, f := range files {
				raw, _ := os.ReadFile(f)
				m, err := Parse(bytes.NewReader(raw), Options{})
				if err != nil {
					errs <- err
					continue
				}
				b, _ := json.Marshal(m)
				if string(b) != want[f] {
					errs <- fmt.Errorf("%s: concurrent result differs", f)
					continue
				}
				errs <- nil
			}
		}()
	}
	for i := 0; i < 8*len(files); i++ {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}
