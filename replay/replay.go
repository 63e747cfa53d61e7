// Package replay feeds stored mail back into mailworker: .eml files,
// directories of them, mbox files and Maildirs.
//
// A replay reads its sources as a stream (one spool per message, never a
// whole mbox in memory) and hands each message to a Target:
//
//   - SinkTarget delivers it to the pipeline as a fetch would (same event
//     id, kinds and dedupe: replaying twice publishes nothing new);
//   - IMAPTarget APPENDs it to a mailbox so the real fetcher picks it up;
//   - PrintTarget writes the event it would produce (dry run).
//
// Replay accepts what the parser accepts and judges nothing itself: a
// message the parser cannot parse (an empty file, say) reaches the target
// like any other and is published as a failed event, exactly as a fetch of
// the same bytes would be. Only files that cannot be read, and messages a
// target refuses (e.g. an IMAP server's NO to an APPEND), are collected as
// Failures with their position (file, mbox message number and byte offset)
// and the replay goes on. The CLI verb `mailworker replay` is the user interface.
package replay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"
)

// Target receives replayed messages. Put is called from one goroutine at a
// time, in source order.
type Target interface {
	// Put hands over one message and returns once the target is done with
	// it (published and acknowledged, appended, printed): it.Body is released
	// after Put returns. An error wrapped in a *MessageError concerns only
	// this message, which is reported as failed while the replay goes on;
	// any other error stops the replay.
	Put(ctx context.Context, it *Item) error
}

// MessageError is a Target's rejection of one message (e.g. the server
// refused the APPEND of that message). The replay reports it and goes on.
type MessageError struct{ Err error }

func (e *MessageError) Error() string { return e.Err.Error() }
func (e *MessageError) Unwrap() error { return e.Err }

// ErrFailures is returned by Run when the replay finished but some messages
// failed; Result.Failures lists them.
var ErrFailures = errors.New("some messages could not be replayed")

// Options configures Run. Target is required; the zero value of every other
// field has a meaning.
type Options struct {
	Target Target
	Read   ReadOptions
	// Progress receives progress output (stderr in the CLI); nil shows none.
	Progress io.Writer
	// Terminal draws a progress bar redrawn in place; otherwise a plain line
	// is written every Interval or every 1,000 messages.
	Terminal bool
	// Interval between plain progress lines; default 2s.
	Interval time.Duration
	// Logger receives one debug line per message; nil discards.
	Logger *slog.Logger
}

// Result summarises a replay.
type Result struct {
	Replayed int   // messages accepted by the target
	Bytes    int64 // raw bytes of those messages
	Failures []Failure
}

// String summarises r in one line, e.g. "replayed 10 messages (5.8 kB), 2 failed".
func (r Result) String() string {
	s := fmt.Sprintf("replayed %d messages (%s)", r.Replayed, formatBytes(r.Bytes))
	if n := len(r.Failures); n > 0 {
		s += fmt.Sprintf(", %d failed", n)
	}
	return s
}

// Run reads every message of plan and puts it to opts.Target. It returns
// ErrFailures (with the Result filled) when some messages failed, or the
// error that stopped it (a Target error that is not a *MessageError, or
// ctx's).
func Run(ctx context.Context, plan *Plan, opts Options) (Result, error) {
	if opts.Target == nil {
		return Result{}, errors.New("replay: no target")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var res Result
	pr := newProgress(opts.Progress, opts.Terminal, opts.Interval, plan)
	read := opts.Read
	user := read.Progress
	read.Progress = func(n int64) {
		pr.read(n)
		if user != nil {
			user(n)
		}
	}
	bad := func(f Failure) {
		res.Failures = append(res.Failures, f)
		pr.message(false)
		log.DebugContext(ctx, "replay failed", "pos", f.Pos, "err", f.Err)
	}
	err := plan.Each(ctx, read, func(it *Item) error {
		err := opts.Target.Put(ctx, it)
		var me *MessageError
		if errors.As(err, &me) {
			bad(Failure{Pos: it.Pos(), Err: me.Err})
			return nil
		}
		if err != nil {
			return fmt.Errorf("replay %s: %w", it.Pos(), err)
		}
		res.Replayed++
		res.Bytes += it.Body.Size()
		pr.message(true)
		log.DebugContext(ctx, "replayed", "pos", it.Pos(), "size", it.Body.Size())
		return nil
	}, bad)
	pr.done()
	if err != nil {
		return res, err
	}
	if len(res.Failures) > 0 {
		return res, fmt.Errorf("%w: %d of %d", ErrFailures, len(res.Failures), len(res.Failures)+res.Replayed)
	}
	return res, nil
}
