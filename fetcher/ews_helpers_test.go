package fetcher_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/mailworker/mailworker/fetcher"
	"github.com/mailworker/mailworker/fetcher/exchangetest"
	"github.com/mailworker/mailworker/storage"
	"github.com/mailworker/mailworker/storage/storagetest"
)

// Helpers shared by the EWS and Graph tests.

// exCreds is a fetcher.Credentials with a password and a sequence of
// access tokens: tokens[0] at first, the next one on each refresh.
type exCreds struct {
	password string
	mu       sync.Mutex
	tokens   []string
	cur      int
	refresh  int
}

func (c *exCreds) Password() (string, error) { return c.password, nil }

func (c *exCreds) AccessToken(ctx context.Context, refresh bool) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if refresh {
		c.refresh++
		if c.cur < len(c.tokens)-1 {
			c.cur++
		}
	}
	if len(c.tokens) == 0 {
		return "", fmt.Errorf("no token")
	}
	return c.tokens[c.cur], nil
}

func (c *exCreds) refreshes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.refresh
}

// exRaw returns a small distinct RFC 5322 message.
func exRaw(i int) []byte {
	return []byte(fmt.Sprintf("From: Customer %d <c%d@example.org>\r\nTo: helpdesk@example.com\r\n"+
		"Subject: Printer %d is broken\r\nMessage-ID: <m%d-%d@example.org>\r\n"+
		"Date: Mon, 5 Jan 2026 09:%02d:00 +0000\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"+
		"Hello, printer %d prints only blank pages.\r\n", i, i, i, i, time.Now().UnixNano(), i%60, i))
}

// exSeed delivers n messages to folder and returns their raw bytes and ids.
func exSeed(mb *exchangetest.Mailbox, folder string, n int) ([][]byte, []string) {
	var raws [][]byte
	var ids []string
	for i := range n {
		r := exRaw(i)
		raws = append(raws, r)
		ids = append(ids, mb.Deliver(folder, r, false))
	}
	return raws, ids
}

func exCheckpoints(t *testing.T) *fetcher.Checkpoints {
	t.Helper()
	return fetcher.NewCheckpoints(storagetest.Open(t, storage.SQLite))
}

func exCheckpointsDB(db *sqlx.DB) *fetcher.Checkpoints { return fetcher.NewCheckpoints(db) }

// exLogger logs through t, so failures show the fetcher's log.
func exLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(exTWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type exTWriter struct{ t *testing.T }

func (w exTWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

// exBufLogger returns a debug logger writing into a buffer.
func exBufLogger() (*slog.Logger, *exSyncBuffer) {
	b := &exSyncBuffer{}
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug})), b
}

type exSyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *exSyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *exSyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// exCtx returns a context bounded so that a hung test fails instead of
// blocking the suite.
func exCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// exWantDelivered checks that sink received exactly raws, in order.
func exWantDelivered(t *testing.T, sink *exchangetest.Sink, raws [][]byte) {
	t.Helper()
	got := sink.Deliveries()
	if len(got) != len(raws) {
		t.Fatalf("delivered %d messages, want %d", len(got), len(raws))
	}
	for i, d := range got {
		if !bytes.Equal(d.Raw, raws[i]) {
			t.Errorf("delivery %d = %.60q…, want %.60q…", i, d.Raw, raws[i])
		}
		if !d.Acked {
			t.Errorf("delivery %d not acknowledged", i)
		}
	}
}
