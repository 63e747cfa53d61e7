package fetcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// ErrTimeout is returned (wrapped) when a network step exceeded its limit
// (see Timeouts) and the connection was closed.
var ErrTimeout = errors.New("timed out")

// watchdog closes a connection when ctx is done or when the current step
// outlives its deadline. go-imap v2 takes no context, so this is how every
// blocking call is bounded: closing the socket makes it return.
type watchdog struct {
	conn    io.Closer
	timer   *time.Timer
	stopCtx func() bool

	mu     sync.Mutex
	op     string
	reason error
}

func newWatchdog(ctx context.Context, conn io.Closer) *watchdog {
	w := &watchdog{conn: conn}
	w.timer = time.AfterFunc(time.Hour, func() { w.fire(ErrTimeout) })
	w.timer.Stop()
	w.stopCtx = context.AfterFunc(ctx, func() { w.fire(context.Cause(ctx)) })
	return w
}

// arm starts (or restarts) the deadline d for the step named op.
func (w *watchdog) arm(op string, d time.Duration) {
	w.mu.Lock()
	w.op = op
	w.mu.Unlock()
	w.timer.Reset(d)
}

func (w *watchdog) fire(reason error) {
	w.mu.Lock()
	if w.reason == nil {
		if errors.Is(reason, ErrTimeout) {
			reason = fmt.Errorf("%s: %w", w.op, reason)
		}
		w.reason = reason
	}
	w.mu.Unlock()
	w.conn.Close() // the blocked call fails; its error is wrapped by wrap
}

// stop disarms the watchdog; the connection stays open.
func (w *watchdog) stop() {
	w.timer.Stop()
	w.stopCtx()
}

// wrap returns err, or, when the watchdog closed the connection, an error
// wrapping both the reason (ErrTimeout or the context's error) and err.
func (w *watchdog) wrap(err error) error {
	if err == nil {
		return nil
	}
	w.mu.Lock()
	r := w.reason
	w.mu.Unlock()
	if r != nil && !errors.Is(err, r) {
		return fmt.Errorf("%w (%w)", r, err)
	}
	return err
}
