package publisher

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mailworker/mailworker/config"
	"github.com/mailworker/mailworker/parser"
)

// BenchmarkPublishAsync is the ceiling for the pipeline: ~2 KB events
// published with a window of 64 in flight, acks awaited in order, no
// parsing and no database.
func BenchmarkPublishAsync(b *testing.B) {
	e, err := StartEmbedded(b.TempDir(), testLogger(b))
	if err != nil {
		b.Fatal(err)
	}
	defer e.Shutdown()
	ctx := context.Background()
	nc, err := Connect(ctx, config.NATS{}, e, testLogger(b))
	if err != nil {
		b.Fatal(err)
	}
	p, err := New(ctx, nc, config.NATS{}, testLogger(b))
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	text := strings.Repeat("Some text of a typical helpdesk mail. ", 50)
	futs := make(chan *Future, 64)
	errc := make(chan error, 1)
	go func() {
		var first error
		for f := range futs {
			if _, err := f.Wait(ctx); err != nil && first == nil {
				first = err
			}
		}
		errc <- first
	}()
	subj := p.Subject("s", SubjectRequest)
	start := time.Now()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ev := &Event{Schema: SchemaV1, ID: fmt.Sprint(start.UnixNano(), "-", i), Message: &parser.Message{Text: text}}
		f, err := p.PublishAsync(ctx, subj, ev)
		if err != nil {
			b.Fatal(err)
		}
		futs <- f
	}
	close(futs)
	if err := <-errc; err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}
