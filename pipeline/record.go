package pipeline

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/mailworker/mailworker/publisher"
)

// maxBatch bounds the ledger rows written in one transaction (a variable
// so that the benchmark can compare with one row per transaction).
var maxBatch = 512

// record is what is written once an event is acknowledged.
type record struct {
	row ledgerRow
	c   counters   // counters to add when the row is new and not a JetStream duplicate
	f   *failedRow // set for failed events: the pipeline_failed row
	// attempts > 0: pipeline_attempts has a row to delete once recorded
	attempts int
}

// failedRow is a pipeline_failed row to insert.
type failedRow struct {
	eventID, rawPath, err string
}

// pubAck is the Ack of a published event. Its Wait waits for the PubAck,
// then writes the ledger row. Rows are written in batches: the Wait that
// writes takes along every other pending event whose PubAck has already
// arrived (the fetcher delivers many messages, then waits on their acks in
// order, so the first Wait usually records the whole run in one
// transaction). Writing a row before its own Wait is called is safe: the
// event is acknowledged by JetStream, which is all the ledger claims.
type pubAck struct {
	p   *Pipeline
	s   *serverSink
	h   *handling // the message, for a quarantine
	fut *publisher.Future
	rec record

	// guarded by p.flushMu
	done bool
	err  error

	releaseOnce sync.Once
}

// newPubAck registers a publish in flight.
func (s *serverSink) newPubAck(fut *publisher.Future, h *handling, rec record) *pubAck {
	a := &pubAck{p: s.p, s: s, h: h, fut: fut, rec: rec}
	s.addInflight(rec.row.MessageID, 1)
	s.p.pendMu.Lock()
	s.p.pending = append(s.p.pending, a)
	s.p.pendMu.Unlock()
	return a
}

// release drops the in-flight Message-ID of a finished publish.
func (a *pubAck) release() {
	a.releaseOnce.Do(func() { a.s.addInflight(a.rec.row.MessageID, -1) })
}

// Wait implements fetcher.Ack. An error that is not an outage (see
// classify) quarantines the message, as Deliver does: a failed event is
// published and recorded instead, and Wait returns nil once it is.
func (a *pubAck) Wait(ctx context.Context) error {
	err := a.wait(ctx)
	if err == nil || a.rec.f != nil || a.h == nil {
		return err // a failed event is not quarantined again
	}
	qa, qerr := a.s.onError(ctx, a.h, err)
	if qerr != nil {
		return qerr
	}
	return qa.Wait(ctx)
}

func (a *pubAck) wait(ctx context.Context) error {
	if _, err := a.fut.Wait(ctx); err != nil {
		if _, _, done := a.fut.Poll(); done {
			a.p.forget(a)
			a.release()
		}
		return fmt.Errorf("pipeline %s %s: %w", a.s.name, a.rec.row.SourceRef, err)
	}
	return a.p.flush(ctx, a)
}

// forget removes a from the pending list.
func (p *Pipeline) forget(a *pubAck) {
	p.pendMu.Lock()
	defer p.pendMu.Unlock()
	for i, b := range p.pending {
		if b == a {
			p.pending = append(p.pending[:i], p.pending[i+1:]...)
			return
		}
	}
}

// flush writes a's row, and those of other acknowledged pending events,
// in one transaction.
func (p *Pipeline) flush(ctx context.Context, a *pubAck) error {
	p.flushMu.Lock()
	defer p.flushMu.Unlock()
	if a.done {
		return a.err
	}
	batch := []*pubAck{a}
	p.pendMu.Lock()
	keep := p.pending[:0]
	for _, b := range p.pending {
		if b == a {
			continue
		}
		if len(batch) >= maxBatch {
			keep = append(keep, b)
			continue
		}
		_, err, done := b.fut.Poll()
		switch {
		case !done:
			keep = append(keep, b)
		case err != nil:
			b.release() // its own Wait reports the error
		default:
			batch = append(batch, b)
		}
	}
	clear(p.pending[len(keep):])
	p.pending = keep
	p.pendMu.Unlock()

	now := p.now().UTC()
	err := p.inTx(ctx, fmt.Sprintf("ledger: record %d events", len(batch)), func(tx *sqlx.Tx) error {
		return recordBatch(ctx, tx, batch, now)
	})
	if err != nil && len(batch) > 1 && classify(err) != classOutage {
		// A row was refused (one message's value, not an outage): write
		// each row on its own, so that only that row's message is
		// affected, whichever server it belongs to. A row that fails
		// again goes back to pending; its own Wait quarantines it.
		var aErr error
		for _, b := range batch {
			berr := p.inTx(ctx, "ledger: record 1 event", func(tx *sqlx.Tx) error {
				return recordBatch(ctx, tx, []*pubAck{b}, now)
			})
			switch {
			case berr == nil:
				b.done = true
				b.release()
			case b == a:
				aErr = berr
			default:
				p.pendMu.Lock()
				p.pending = append(p.pending, b)
				p.pendMu.Unlock()
			}
		}
		if aErr != nil {
			return fmt.Errorf("pipeline %s %s: %w", a.s.name, a.rec.row.SourceRef, aErr)
		}
		return nil
	}
	if err != nil {
		// Only a learns of the failure; the others go back to pending and
		// are written by their own Wait (or a later batch).
		if len(batch) > 1 {
			p.pendMu.Lock()
			p.pending = append(p.pending, batch[1:]...)
			p.pendMu.Unlock()
		}
		return fmt.Errorf("pipeline %s %s: %w", a.s.name, a.rec.row.SourceRef, err)
	}
	for _, b := range batch {
		b.done = true
		b.release()
	}
	return nil
}

func recordBatch(ctx context.Context, tx *sqlx.Tx, batch []*pubAck, now time.Time) error {
	ins, err := tx.PreparexContext(ctx, tx.Rebind(insertLedgerSQL))
	if err != nil {
		return fmt.Errorf("prepare ledger insert: %w", err)
	}
	defer ins.Close()
	sums := map[string]counters{}
	for _, b := range batch {
		ack, _, _ := b.fut.Poll()
		row := b.rec.row
		row.StreamSeq = ack.Sequence
		res, err := ins.ExecContext(ctx, ledgerArgs(row, now)...)
		if err != nil {
			return fmt.Errorf("insert ledger row %s: %w", row.SourceRef, err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return fmt.Errorf("insert ledger row %s: %w", row.SourceRef, err)
		}
		c := b.rec.c
		// A JetStream duplicate whose ledger row is new is an event that an
		// earlier attempt published but could not record (crash, NATS
		// outage before the ack arrived): it counts, and is filed, as what
		// it is. Only a row the ledger already had is a duplicate.
		if n != 1 {
			c = counters{fetched: c.fetched, duplicates: 1}
		} else if b.rec.f != nil {
			if err := insertFailed(ctx, tx, row, *b.rec.f, now); err != nil {
				return err
			}
		}
		if b.rec.attempts > 0 {
			if err := deleteAttempts(ctx, tx, row.Server, row.RawSHA256); err != nil {
				return err
			}
		}
		sums[row.Server] = sums[row.Server].add(c)
	}
	for server, c := range sums {
		if err := bumpTx(ctx, tx, server, c, now); err != nil {
			return err
		}
	}
	return nil
}

func (c counters) add(d counters) counters {
	return counters{
		fetched:    c.fetched + d.fetched,
		published:  c.published + d.published,
		suppressed: c.suppressed + d.suppressed,
		failed:     c.failed + d.failed,
		duplicates: c.duplicates + d.duplicates,
	}
}
