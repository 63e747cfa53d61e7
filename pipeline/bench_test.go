package pipeline

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/mailworker/mailworker/config"
	"github.com/mailworker/mailworker/fetcher"
	"github.com/mailworker/mailworker/spool"
	"github.com/mailworker/mailworker/storage"
	"github.com/mailworker/mailworker/storage/storagetest"
)

// BenchmarkDeliver measures Deliver+Wait throughput on embedded NATS and
// SQLite the way the IMAP fetcher drives the sink: deliver a batch of
// messages, then wait on their acks in order. batch=1 waits after every
// message.
func BenchmarkDeliver(b *testing.B) {
	for _, tc := range []struct{ batch, rowsPerTx int }{{1, 512}, {64, 1}, {64, 512}} {
		batch := tc.batch
		b.Run(fmt.Sprintf("batch=%d/rows_per_tx=%d", tc.batch, tc.rowsPerTx), func(b *testing.B) {
			defer func(old int) { maxBatch = old }(maxBatch)
			maxBatch = tc.rowsPerTx
			e := newEnv(b, storagetest.Open(b, storage.SQLite), false)
			e.p.logger = slog.New(slog.DiscardHandler)
			sink := e.p.ForServer(config.Server{Name: "s1", Username: "help"}, slog.New(slog.DiscardHandler))
			body := strings.Repeat("Some text of a typical helpdesk mail. ", 50) // ~2 KB
			ctx := context.Background()
			acks := make([]fetcher.Ack, 0, batch)
			b.SetBytes(int64(len(body)))
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				var buf bytes.Buffer
				fmt.Fprintf(&buf, "From: a@cust.com\r\nMessage-ID: <%d.%d@cust.com>\r\nSubject: n %d\r\n\r\n%s\r\n", start.UnixNano(), i, i, body)
				ack, err := sink.Deliver(ctx, &fetcher.Message{Server: "s1", Folder: "INBOX", Ref: fmt.Sprint(i), Body: spool.FromBytes(buf.Bytes())})
				if err != nil {
					b.Fatal(err)
				}
				acks = append(acks, ack)
				if len(acks) == batch || i == b.N-1 {
					for _, a := range acks {
						if err := a.Wait(ctx); err != nil {
							b.Fatal(err)
						}
					}
					acks = acks[:0]
				}
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
		})
	}
}
