package replay

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/mailworker/mailworker/config"
	"github.com/mailworker/mailworker/fetcher"
	"github.com/mailworker/mailworker/imaptest"
	"github.com/mailworker/mailworker/secret"
	"github.com/mailworker/mailworker/storage/storagetest"
)

// samples is the repository's sample mail folder.
const samples = "../samples/mail"

// recordSink is a fetcher.Sink that records the SHA-256 of every raw
// message it is given, to compare what a fetch delivers with what a replay
// delivers (the event id is a function of server, mailbox and this hash).
type recordSink struct {
	mu   sync.Mutex
	shas []string
	refs []string
}

type doneAck struct{}

func (doneAck) Wait(context.Context) error { return nil }

func (s *recordSink) Deliver(_ context.Context, m *fetcher.Message) (fetcher.Ack, error) {
	h := sha256.New()
	if _, err := io.Copy(h, m.Body.Open()); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.shas = append(s.shas, hex.EncodeToString(h.Sum(nil)))
	s.refs = append(s.refs, m.Ref)
	return doneAck{}, nil
}

func (s *recordSink) sorted() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Sorted(slices.Values(s.shas))
}

// sampleSHAs replays the samples straight into a recordSink.
func sampleSHAs(t *testing.T) ([]string, *recordSink) {
	t.Helper()
	plan, err := NewPlan([]string{samples}, FormatAuto)
	if err != nil {
		t.Fatal(err)
	}
	sink := &recordSink{}
	res, err := Run(context.Background(), plan, Options{Target: &SinkTarget{Sink: sink, Server: "s"}})
	if err != nil {
		t.Fatalf("replay samples: %v (%v)", err, res.Failures)
	}
	if res.Replayed != 10 {
		t.Fatalf("replayed %d samples, want 10", res.Replayed)
	}
	return sink.sorted(), sink
}

func TestSinkTargetRefs(t *testing.T) {
	_, sink := sampleSHAs(t)
	if got, want := sink.refs[0], "replay:"+filepath.Join(samples, "01-new-request.eml"); got != want {
		t.Errorf("Ref = %q, want %q", got, want)
	}
}

func TestParseIMAPURL(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want config.Server
		err  string
	}{
		{in: "imaps://alice@mail.example.com/Support%2FNew", want: config.Server{Protocol: config.ProtocolIMAPS, Host: "mail.example.com", Username: "alice", Folder: "Support/New"}},
		{in: "imap://bob%40example.com@127.0.0.1:10143", want: config.Server{Protocol: config.ProtocolIMAP, Host: "127.0.0.1", Port: 10143, Username: "bob@example.com", Folder: "INBOX"}},
		{in: "imaps://alice:hunter2@mail.example.com/", err: "password in the URL"},
		{in: "https://alice@mail.example.com/", err: "scheme"},
		{in: "imaps://mail.example.com/", err: "no user"},
		{in: "imaps://alice@mail.example.com:99999/", err: "bad port"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseIMAPURL(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || strings.Contains(err.Error(), "hunter2") {
					t.Fatalf("ParseIMAPURL(%q) err = %v, want %q without the password", tc.in, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Protocol != tc.want.Protocol || got.Host != tc.want.Host || got.Port != tc.want.Port ||
				got.Username != tc.want.Username || got.Folder != tc.want.Folder || got.Auth.Method != config.AuthPassword {
				t.Errorf("ParseIMAPURL(%q) = %+v, want %+v", tc.in, got, tc.want)
			}
		})
	}
}

// TestAppendThenFetch replays the samples into a mailbox with --to
// semantics (imaps and STARTTLS), checks they arrive unseen with their
// original dates, then runs the real IMAP fetcher on that mailbox: it must
// deliver each message exactly once, byte for byte what a direct replay
// delivers (hence the same event ids), and nothing on a second fetch.
func TestAppendThenFetch(t *testing.T) {
	want, _ := sampleSHAs(t)
	for _, starttls := range []bool{false, true} {
		t.Run(fmt.Sprintf("starttls=%v", starttls), func(t *testing.T) {
			m := imaptest.StartMem(t, imaptest.MemOptions{StartTLS: true})
			m.CreateFolder(t, "alice", "Helpdesk")
			url := fmt.Sprintf("imaps://alice@127.0.0.1:%d/Helpdesk", m.Port())
			if starttls {
				url = fmt.Sprintf("imap://alice@127.0.0.1:%d/Helpdesk", m.StartTLSPort())
			}
			srv, err := ParseIMAPURL(url)
			if err != nil {
				t.Fatal(err)
			}
			srv.TLS.CAFile = m.CAFile()
			creds := PasswordCredentials{Secret: secret.New("secret")}
			appendSamples(t, srv, creds)

			msgs := m.Messages(t, "alice", "Helpdesk")
			if len(msgs) != len(want) {
				t.Fatalf("mailbox has %d messages, want %d", len(msgs), len(want))
			}
			for _, msg := range msgs {
				if msg.Has(imap.FlagSeen) {
					t.Errorf("uid %d appended with \\Seen", msg.UID)
				}
			}
			first, err := os.ReadFile(filepath.Join(samples, "01-new-request.eml"))
			if err != nil {
				t.Fatal(err)
			}
			if string(msgs[0].Body) != strings.ReplaceAll(string(first), "\n", "\r\n") {
				t.Errorf("first message differs from 01-new-request.eml:\n%q\n%q", msgs[0].Body[:80], first[:80])
			}

			checkInternalDate(t, srv, creds, time.Date(2026, 11, 23, 8, 14, 52, 0, time.FixedZone("", 3600)))

			db := storagetest.Open(t, "sqlite")
			srv.Name = "helpdesk"
			f, err := fetcher.NewIMAP(srv, fetcher.Deps{Checkpoints: fetcher.NewCheckpoints(db), Credentials: creds})
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			sink := &recordSink{}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if _, err := f.Fetch(ctx, sink); err != nil {
				t.Fatalf("Fetch: %v", err)
			}
			if got := sink.sorted(); !slices.Equal(got, want) {
				t.Errorf("fetch after replay delivered %d messages %v, want the %d replayed %v", len(got), got, len(want), want)
			}
			again := &recordSink{}
			if _, err := f.Fetch(ctx, again); err != nil {
				t.Fatalf("second Fetch: %v", err)
			}
			if len(again.shas) != 0 {
				t.Errorf("second fetch delivered %d messages, want 0", len(again.shas))
			}
		})
	}
}

// appendSamples replays the samples into srv's folder through an IMAPTarget.
func appendSamples(t *testing.T, srv config.Server, creds fetcher.Credentials) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := fetcher.DialIMAP(ctx, srv, fetcher.Deps{Credentials: creds})
	if err != nil {
		t.Fatalf("DialIMAP: %v", err)
	}
	defer c.Close()
	plan, err := NewPlan([]string{samples}, FormatAuto)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Run(ctx, plan, Options{Target: &IMAPTarget{Client: c, Addr: srv.Host, Folder: srv.Folder}})
	if err != nil {
		t.Fatalf("replay --to: %v (%v)", err, res.Failures)
	}
}

// checkInternalDate checks that the first message in srv's folder has
// INTERNALDATE want (its Date header: replay keeps the original date).
func checkInternalDate(t *testing.T, srv config.Server, creds fetcher.Credentials, want time.Time) {
	t.Helper()
	c, err := fetcher.DialIMAP(context.Background(), srv, fetcher.Deps{Credentials: creds})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Select(srv.Folder, &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
		t.Fatal(err)
	}
	msgs, err := c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{InternalDate: true}).Collect()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("fetch INTERNALDATE: %v (%d messages)", err, len(msgs))
	}
	if got := msgs[0].InternalDate; !got.Equal(want) {
		t.Errorf("INTERNALDATE = %v, want the Date header's %v", got, want)
	}
}

func TestAppendMissingFolder(t *testing.T) {
	m := imaptest.StartMem(t, imaptest.MemOptions{})
	srv, err := ParseIMAPURL(fmt.Sprintf("imaps://alice@127.0.0.1:%d/Nowhere", m.Port()))
	if err != nil {
		t.Fatal(err)
	}
	srv.TLS.CAFile = m.CAFile()
	ctx := context.Background()
	c, err := fetcher.DialIMAP(ctx, srv, fetcher.Deps{Credentials: PasswordCredentials{Secret: secret.New("secret")}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	plan, err := NewPlan([]string{samples}, FormatAuto)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Run(ctx, plan, Options{Target: &IMAPTarget{Client: c, Addr: "mem", Folder: srv.Folder}})
	if !errors.Is(err, ErrNoFolder) || res.Replayed != 0 {
		t.Errorf("append to a missing folder: err %v, replayed %d; want ErrNoFolder and 0", err, res.Replayed)
	}
}

// TestAppendDovecot is TestAppendThenFetch against the system's Dovecot
// (skipped when it is not installed, unless MAILWORKER_TEST_REQUIRE_DOVECOT=1).
func TestAppendDovecot(t *testing.T) {
	want, _ := sampleSHAs(t)
	d := imaptest.StartDovecot(t, imaptest.DovecotOptions{})
	srv, err := ParseIMAPURL(fmt.Sprintf("imap://alice@127.0.0.1:%d/INBOX", d.StartTLSPort()))
	if err != nil {
		t.Fatal(err)
	}
	srv.TLS.CAFile = d.CAFile()
	creds := PasswordCredentials{Secret: secret.New("secret")}
	appendSamples(t, srv, creds)
	msgs := d.Messages("alice", "INBOX")
	if len(msgs) != len(want) {
		t.Fatalf("Dovecot INBOX has %d messages, want %d", len(msgs), len(want))
	}
	for _, m := range msgs {
		if m.Has(imap.FlagSeen) {
			t.Errorf("uid %d appended with \\Seen", m.UID)
		}
	}
	checkInternalDate(t, srv, creds, time.Date(2026, 11, 23, 8, 14, 52, 0, time.FixedZone("", 3600)))

	srv.Name = "helpdesk"
	f, err := fetcher.NewIMAP(srv, fetcher.Deps{Checkpoints: fetcher.NewCheckpoints(storagetest.Open(t, "sqlite")), Credentials: creds})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sink := &recordSink{}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := f.Fetch(ctx, sink); err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	if got := sink.sorted(); !slices.Equal(got, want) {
		t.Errorf("fetch from Dovecot after replay delivered %d messages, not byte-identical to the %d replayed", len(got), len(want))
	}
}
