package fetcher

import (
	"context"
	"crypto/tls"
	"io"
	"testing"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/mailworker/mailworker/config"
	"github.com/mailworker/mailworker/imaptest"
	"github.com/mailworker/mailworker/storage"
	"github.com/mailworker/mailworker/storage/storagetest"
)

// discardSink reads every body and acknowledges at once.
type discardSink struct{}

func (discardSink) Deliver(ctx context.Context, m *Message) (Ack, error) {
	_, err := io.Copy(io.Discard, m.Body.Open())
	return recAck{}, err
}

const (
	benchMessages = 1000
	benchSize     = 50 << 10
)

func benchDovecot(b *testing.B) (*imaptest.Dovecot, int64) {
	d := imaptest.StartDovecot(b, imaptest.DovecotOptions{Users: map[string]string{"alice": "pw"}})
	var msgs [][]byte
	var total int64
	for i := 0; i < benchMessages; i++ {
		m := testMsg(i, benchSize)
		msgs = append(msgs, m)
		total += int64(len(m))
	}
	d.SeedMaildir("alice", "INBOX", msgs)
	return d, total
}

// BenchmarkDovecotFetch is one full Fetch of 1,000 messages of 50 kB from
// Dovecot over TLS (checkpoint reset each iteration, after_fetch none).
// Compare with BenchmarkDovecotBareFetch, run in the same invocation.
func BenchmarkDovecotFetch(b *testing.B) {
	d, total := benchDovecot(b)
	srv := dovecotServer(d)
	srv.AfterFetch = config.AfterFetch{Action: config.ActionNone}
	srv.MaxPerFetch = benchMessages
	cps := NewCheckpoints(storagetest.Open(b, storage.SQLite))
	im, err := NewIMAP(srv, Deps{Checkpoints: cps, Credentials: &testCreds{password: "pw"}, SpoolDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.SetBytes(total)
	b.ResetTimer()
	for b.Loop() {
		if err := cps.Delete(ctx, "dc"); err != nil {
			b.Fatal(err)
		}
		st, err := im.Fetch(ctx, discardSink{})
		if err != nil || st.Delivered != benchMessages {
			b.Fatalf("Fetch = %+v, %v", st, err)
		}
	}
}

// BenchmarkDovecotBareFetch is the ceiling: one streamed UID FETCH 1:*
// BODY.PEEK[] into io.Discard, no spool, no checkpoint, no sink.
func BenchmarkDovecotBareFetch(b *testing.B) {
	d, total := benchDovecot(b)
	b.SetBytes(total)
	b.ResetTimer()
	for b.Loop() {
		c, err := imapclient.DialTLS(d.Addr(), &imapclient.Options{TLSConfig: &tls.Config{RootCAs: certPool(b, d.CAFile()), ServerName: "127.0.0.1"}})
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Login("alice", "pw").Wait(); err != nil {
			b.Fatal(err)
		}
		if _, err := c.Select("INBOX", nil).Wait(); err != nil {
			b.Fatal(err)
		}
		var set imap.UIDSet
		set.AddRange(1, 0)
		cmd := c.Fetch(set, &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{{Peek: true}}})
		n := 0
		for m := cmd.Next(); m != nil; m = cmd.Next() {
			for it := m.Next(); it != nil; it = m.Next() {
				if bs, ok := it.(imapclient.FetchItemDataBodySection); ok {
					io.Copy(io.Discard, bs.Literal)
					n++
				}
			}
		}
		if err := cmd.Close(); err != nil || n != benchMessages {
			b.Fatalf("fetched %d, %v", n, err)
		}
		c.Close()
	}
}
