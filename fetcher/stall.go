package fetcher

import (
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
