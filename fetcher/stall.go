package fetcher

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/mailworker/mailworker/config"
	"github.com/mailworker/mailworker/stallconn"
)

// logoutTimeout bounds LOGOUT at the end of a session: it is a courtesy,
// and a frozen connection must not hold the run (and the server's next
// ticks) for a full command timeout. The socket is closed afterwards
// either way.
const logoutTimeout = 5 * time.Second

// stallTimeout is the no-progress limit for srv's connections:
// deps.Timeouts.Stall when set (Go API, tests), else the server's
// stall_timeout, else stallconn.DefaultTimeout.
func stallTimeout(srv config.Server, deps Deps) time.Duration {
	switch {
	case deps.Timeouts.Stall > 0:
		return deps.Timeouts.Stall
	case srv.StallTimeout > 0:
		return srv.StallTimeout.D()
	}
	return stallconn.DefaultTimeout
}

// dialWatched dials addr (TCP, keepalive on) within t.Dial and returns the
// connection with stall timeout t.Stall, watched by a watchdog that follows
// ctx, armed for the "connect" step. It is how a fetcher on a raw socket
// (IMAP; POP3 to come) connects: run TLS and the protocol on top of the
// returned conn, arm the watchdog per step, pause it while not waiting on
// the server, and close with goodbye.
func dialWatched(ctx context.Context, addr string, t Timeouts) (*stallconn.Conn, *watchdog, error) {
	tcp, err := stallconn.Dialer(t.Dial).DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	c := stallconn.New(tcp, t.Stall)
	wd := newWatchdog(ctx, c)
	wd.arm("connect", t.Dial)
	return c, wd, nil
}

// goodbye runs a session's polite last command (LOGOUT, QUIT) as step,
// best effort within logoutTimeout (and the stall timeout). It returns the
// error only when the connection stalled or timed out, which means the
// connection to the server is broken and the run should say so; other
// failures (the server already hung up) are logged at debug level. The
// caller closes the socket afterwards either way.
func goodbye(wd *watchdog, step string, cmd func() error, log *slog.Logger) error {
	wd.arm(step, logoutTimeout)
	err := wd.wrap(cmd())
	if err == nil {
		return nil
	}
	log.Debug("closing command failed", "step", step, "err", err)
	if errors.Is(err, stallconn.ErrStalled) || errors.Is(err, ErrTimeout) {
		return err
	}
	return nil
}
