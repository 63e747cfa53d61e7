package publisher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// ErrStop, returned by a Follow callback, ends Follow without error.
var ErrStop = errors.New("stop following")

// Follow reads the stream's events on filterSubject ("" = all) in order
// with an ordered (ephemeral, unacknowledged) consumer and calls fn for each.
// With deliverAll it starts at the first stored event, otherwise at new
// ones. It returns when ctx is done (nil), when fn returns ErrStop (nil) or
// another error (that error), or when the consumer fails. A message that is
// not a valid event is passed to fn with a nil *Event.
func Follow(ctx context.Context, js jetstream.JetStream, stream, filterSubject string, deliverAll bool, fn func(*Event, jetstream.Msg) error) error {
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverNewPolicy}
	if deliverAll {
		cfg.DeliverPolicy = jetstream.DeliverAllPolicy
	}
	if filterSubject != "" {
		cfg.FilterSubjects = []string{filterSubject}
	}
	cons, err := js.OrderedConsumer(ctx, stream, cfg)
	if err != nil {
		return fmt.Errorf("follow stream %s %s: %w", stream, filterSubject, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("follow stream %s %s: %w", stream, filterSubject, err)
	}
	stopped := make(chan struct{})
	defer close(stopped)
	go func() {
		select {
		case <-ctx.Done():
			it.Stop()
		case <-stopped:
		}
	}()
	defer it.Stop()
	for {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return nil
			}
			return fmt.Errorf("follow stream %s %s: %w", stream, filterSubject, err)
		}
		var ev *Event
		var e Event
		if json.Unmarshal(msg.Data(), &e) == nil {
			ev = &e
		}
		if err := fn(ev, msg); err != nil {
			if errors.Is(err, ErrStop) {
				return nil
			}
			return err
		}
	}
}

// Pending returns how many events on filterSubject ("" = all) the stream
// holds, so a reader that wants "what is there" knows when it has seen all.
func Pending(ctx context.Context, js jetstream.JetStream, stream, filterSubject string) (uint64, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", stream, err)
	}
	if filterSubject == "" {
		info, err := s.Info(ctx)
		if err != nil {
			return 0, fmt.Errorf("stream %s info: %w", stream, err)
		}
		return info.State.Msgs, nil
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(filterSubject))
	if err != nil {
		return 0, fmt.Errorf("stream %s info %s: %w", stream, filterSubject, err)
	}
	var n uint64
	for _, c := range info.State.Subjects {
		n += c
	}
	return n, nil
}
