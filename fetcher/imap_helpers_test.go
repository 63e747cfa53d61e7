package fetcher

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailworker/mailworker/config"
	"github.com/mailworker/mailworker/imaptest"
	"github.com/mailworker/mailworker/storage"
	"github.com/mailworker/mailworker/storage/storagetest"
)

// recSink is a Sink that records what it gets and can fail acks on purpose.
// (The real Sink, pipeline.Pipeline, lives in another package.)
type recSink struct {
	mu      sync.Mutex
	got     []recMsg
	failAck map[uint32]error // ack error by UID
	failDel map[uint32]error // Deliver error by UID
}

type recMsg struct {
	UID, UIDValidity uint32
	Ref              string
	Body             []byte
	InFile           bool // the spool had spilled to a file
	Received         time.Time
}

type recAck struct{ err error }

func (a recAck) Wait(ctx context.Context) error { return a.err }

func (s *recSink) Deliver(ctx context.Context, m *Message) (Ack, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.failDel[m.UID]; err != nil {
		return nil, err
	}
	b, err := io.ReadAll(m.Body.Open())
	if err != nil {
		return nil, err
	}
	s.got = append(s.got, recMsg{UID: m.UID, UIDValidity: m.UIDValidity, Ref: m.Ref, Body: b, InFile: m.Body.Bytes() == nil, Received: m.Received})
	return recAck{err: s.failAck[m.UID]}, nil
}

func (s *recSink) uids() []uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []uint32
	for _, m := range s.got {
		out = append(out, m.UID)
	}
	return out
}

func (s *recSink) reset() {
	s.mu.Lock()
	s.got = nil
	s.mu.Unlock()
}

// testCreds counts token requests and refreshes. Tokens are handed out in
// order: the first call gets tokens[0], each refresh moves to the next.
type testCreds struct {
	password string
	tokens   []string
	err      error

	mu        sync.Mutex
	i         int
	refreshes int
}

func (c *testCreds) Password() (string, error) {
	if c.err != nil {
		return "", c.err
	}
	return c.password, nil
}

func (c *testCreds) AccessToken(ctx context.Context, refresh bool) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return "", c.err
	}
	if refresh {
		c.refreshes++
		if c.i < len(c.tokens)-1 {
			c.i++
		}
	}
	return c.tokens[c.i], nil
}

func (c *testCreds) refreshCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.refreshes
}

// testMsg is a small valid message, distinct per i, padded to at least size bytes.
func testMsg(i, size int) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: sender%d@example.test\r\nTo: desk@example.test\r\nSubject: test %d\r\nMessage-ID: <m%d@example.test>\r\nDate: Wed, 25 Nov 2026 06:00:00 +0000\r\n\r\nbody %d\r\n", i, i, i, i)
	line := strings.Repeat("x", 76) + "\r\n"
	for b.Len() < size {
		b.WriteString(line)
	}
	return b.Bytes()
}

type imapFixture struct {
	mem   *imaptest.MemServer
	srv   config.Server
	deps  Deps
	cps   *Checkpoints
	creds *testCreds
	logs  *syncBuffer
}

// syncBuffer is a bytes.Buffer safe for the logger's concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newIMAPFixture(t *testing.T, opts imaptest.MemOptions) *imapFixture {
	t.Helper()
	if opts.Users == nil {
		opts.Users = map[string]string{"alice": "pw-Secr3t-alice"}
	}
	mem := imaptest.StartMem(t, opts)
	logs := &syncBuffer{}
	f := &imapFixture{
		mem:   mem,
		creds: &testCreds{password: opts.Users["alice"]},
		cps:   NewCheckpoints(storagetest.Open(t, storage.SQLite)),
		logs:  logs,
	}
	f.srv = config.Server{
		Name: "test", Protocol: config.ProtocolIMAPS, Host: "127.0.0.1", Port: mem.Port(),
		TLS: config.TLS{CAFile: mem.CAFile()}, Username: "alice", Folder: "INBOX",
		Auth: config.Auth{Method: config.AuthPassword},
	}
	f.deps = Deps{
		Checkpoints: f.cps, Credentials: f.creds, SpoolDir: t.TempDir(),
		Logger:  slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Backoff: Backoff{Attempts: 2, Min: time.Millisecond, Max: 5 * time.Millisecond},
	}
	return f
}

func (f *imapFixture) fetcher(t *testing.T) *IMAP {
	t.Helper()
	im, err := NewIMAP(f.srv, f.deps)
	if err != nil {
		t.Fatal(err)
	}
	return im
}

func (f *imapFixture) checkpoint(t *testing.T) Checkpoint {
	t.Helper()
	cp, err := f.cps.Get(context.Background(), f.srv.Name, f.srv.Folder)
	if err != nil {
		t.Fatal(err)
	}
	return cp
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newJSONLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func certPool(t testing.TB, caFile string) *x509.CertPool {
	t.Helper()
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	p := x509.NewCertPool()
	p.AppendCertsFromPEM(pem)
	return p
}
