package exchangetest

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"sync"

	"github.com/mailworker/mailworker/fetcher"
)

// ErrInjected is the error a Sink's failing acks return.
var ErrInjected = errors.New("exchangetest: injected ack failure")

// Delivery is one message a Sink received.
type Delivery struct {
	Ref    string
	Folder string
	Raw    []byte
	SHA256 [32]byte
	Acked  bool
}

// Sink is a recording fetcher.Sink. Like the real pipeline it treats a
// message whose raw SHA-256 it has acknowledged before as a duplicate (the
// ledger), so tests can count both deliveries and unique messages. It is
// safe for concurrent use.
type Sink struct {
	// FailAck, when set, is called with the 1-based delivery number; a
	// non-nil result fails that delivery's Ack.Wait (a NATS outage).
	FailAck func(n int) error
	// OnDeliver, when set, is called with the 1-based delivery number after
	// the message is recorded (e.g. to cancel the fetch's context).
	OnDeliver func(n int)

	mu         sync.Mutex
	deliveries []Delivery
	acked      map[[32]byte]bool
}

// Deliver implements fetcher.Sink.
func (s *Sink) Deliver(ctx context.Context, msg *fetcher.Message) (fetcher.Ack, error) {
	raw, err := io.ReadAll(msg.Body.Open())
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.deliveries = append(s.deliveries, Delivery{Ref: msg.Ref, Folder: msg.Folder, Raw: raw, SHA256: sha256.Sum256(raw)})
	n := len(s.deliveries)
	s.mu.Unlock()
	if s.OnDeliver != nil {
		s.OnDeliver(n)
	}
	return ack{s: s, n: n}, nil
}

type ack struct {
	s *Sink
	n int
}

func (a ack) Wait(ctx context.Context) error {
	if a.s.FailAck != nil {
		if err := a.s.FailAck(a.n); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	a.s.mu.Lock()
	defer a.s.mu.Unlock()
	d := &a.s.deliveries[a.n-1]
	d.Acked = true
	if a.s.acked == nil {
		a.s.acked = map[[32]byte]bool{}
	}
	a.s.acked[d.SHA256] = true
	return nil
}

// Deliveries returns every delivery so far, in order.
func (s *Sink) Deliveries() []Delivery {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Delivery(nil), s.deliveries...)
}

// Acked reports whether a message with this raw content was acknowledged.
func (s *Sink) Acked(raw []byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.acked[sha256.Sum256(raw)]
}

// Unique is the number of distinct acknowledged messages (what the event
// stream holds after dedupe).
func (s *Sink) Unique() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.acked)
}
