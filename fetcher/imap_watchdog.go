package fetcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/mailworker/mailworker/stallconn"
)

// ErrTimeout is returned (wrapped) when a network step exceeded its limit
// (see Timeouts) and the connection was closed.
var ErrTimeout = errors.New("timed out")

// watchdog closes a connection when ctx is done or when the current step
// outlives its deadline. go-imap v2 takes no context, so this is how every
// blocking call is bounded: closing the socket makes it return.
type watchdog struct {
	conn    io.Closer
	sc      *stallconn.Conn // the connection's stall detector, nil when none
	timer   *time.Timer
	stopCtx func() bool

	mu      sync.Mutex
	op      string
	armedAt time.Time
	limit   time.Duration
	reason  error
}

// newWatchdog watches conn; when conn is a *stallconn.Conn, arm and pause
// drive its stall detection too.
func newWatchdog(ctx context.Context, conn io.Closer) *watchdog {
	w := &watchdog{conn: conn}
	w.sc, _ = conn.(*stallconn.Conn)
	w.timer = time.AfterFunc(time.Hour, func() { w.fire(ErrTimeout) })
	w.timer.Stop()
	w.stopCtx = context.AfterFunc(ctx, func() { w.fire(context.Cause(ctx)) })
	return w
}

// arm starts (or restarts) the deadline d for the step named op, and
// (re)starts stall detection for it.
func (w *watchdog) arm(op string, d time.Duration) {
	w.mu.Lock()
	w.op, w.armedAt, w.limit = op, time.Now(), d
	w.mu.Unlock()
	if w.sc != nil {
		w.sc.SetStep(op)
	}
	w.timer.Reset(d)
}

// pause disarms the step deadline and stall detection while the caller
// waits on something other than the server (a Sink, acks); the next arm
// resumes both. ctx still closes the connection.
func (w *watchdog) pause() {
	w.timer.Stop()
	if w.sc != nil {
		w.sc.Pause()
	}
}

func (w *watchdog) fire(reason error) {
	w.mu.Lock()
	if w.reason == nil {
		switch {
		case errors.Is(reason, ErrTimeout) && w.sc != nil && w.sc.LastReceived().Before(w.armedAt):
			// Nothing arrived during the whole step, a limit shorter than
			// the stall timeout (the 30 s greeting, say): it is a stall as
			// well, so the run ends instead of reconnecting into the same
			// silence.
			reason = fmt.Errorf("%s: %w after %s with no byte received: %w", w.op, reason, w.limit, stallconn.ErrStalled)
		case errors.Is(reason, ErrTimeout):
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
// wrapping both the reason (ErrTimeout or the context's error) and err; or,
// when a stall closed it, one wrapping the *stallconn.Error and err
// (go-imap reports a failed read as text, or as a closed connection).
func (w *watchdog) wrap(err error) error {
	if err == nil {
		return nil
	}
	w.mu.Lock()
	r := w.reason
	w.mu.Unlock()
	if w.sc != nil {
		if se := w.sc.Stalled(); se != nil && (r == nil || errors.Is(r, ErrTimeout)) {
			r = se // the stall came first: the watchdog only saw its consequence
		}
	}
	if r != nil && !errors.Is(err, r) && strings.Contains(err.Error(), r.Error()) {
		return &causeError{cause: r, err: err} // go-imap already quoted the cause
	}
	if r != nil && !errors.Is(err, r) {
		return fmt.Errorf("%w (%w)", r, err)
	}
	return err
}

// causeError is err, whose text already quotes cause, matching both; it
// reads as cause alone.
type causeError struct{ cause, err error }

func (e *causeError) Error() string   { return e.cause.Error() }
func (e *causeError) Unwrap() []error { return []error{e.cause, e.err} }
