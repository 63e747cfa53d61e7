package fetcher

import (
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/mailworker/mailworker/config"
)

// Deps is what a fetcher needs besides its server's configuration. The zero
// value of every field has a documented meaning, so tests set only what they
// care about.
type Deps struct {
	// Checkpoints stores where each folder was left. Fetch requires it; Test
	// reports Pending as -1 without it.
	Checkpoints *Checkpoints
	// Credentials supplies the password or OAuth access token. Required for
	// every server.
	Credentials Credentials
	// Logger receives warnings and, for servers with email_debug, the
	// traceRedacted protocol transcript and per-message decisions at debug level.
	// nil discards everything.
	Logger *slog.Logger
	// SpoolDir is where message bodies larger than spool.DefaultMemLimit are
	// kept while they are processed; "" means os.TempDir().
	SpoolDir string
	// Timeouts bound every network step; zero fields mean the defaults.
	Timeouts Timeouts
	// Backoff paces reconnects within one Fetch; zero fields mean the defaults.
	Backoff Backoff
	// TLSConfig, when set, replaces the TLS configuration built from the
	// server's tls section (ca_file, server_name, insecure_skip_verify). It is
	// cloned, never modified. Production code leaves it nil.
	TLSConfig *tls.Config
}

// Timeouts bounds each network step of a fetch. A step that exceeds its
// limit has its connection closed by a watchdog and fails with ErrTimeout.
// Besides these total limits, every read and write has the no-progress
// limit Stall: when no byte moved for that long the connection is closed
// and the step fails with a *stallconn.Error (errors.Is
// stallconn.ErrStalled), which ends the run.
type Timeouts struct {
	Dial    time.Duration // TCP connect + TLS handshake + greeting; default DefaultDialTimeout
	Command time.Duration // one command's response; default DefaultCommandTimeout
	Literal time.Duration // one message body; default DefaultLiteralTimeout
	// Stall is the no-progress limit; default the server's stall_timeout,
	// else stallconn.DefaultTimeout.
	Stall time.Duration
}

// Default timeouts, used for zero fields of Timeouts.
const (
	DefaultDialTimeout    = 30 * time.Second
	DefaultCommandTimeout = 2 * time.Minute
	// DefaultLiteralTimeout allows a 50 MB message at about 100 kB/s.
	DefaultLiteralTimeout = 10 * time.Minute
)

// withDefaults checks deps and fills its zero fields.
func (deps Deps) withDefaults(srv config.Server) (Deps, error) {
	if deps.Credentials == nil {
		return deps, fmt.Errorf("fetcher %s: no credentials", srv.Name)
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	deps.Timeouts = deps.Timeouts.withDefaults()
	deps.Timeouts.Stall = stallTimeout(srv, deps)
	deps.Backoff = deps.Backoff.withDefaults()
	return deps, nil
}

func (t Timeouts) withDefaults() Timeouts {
	if t.Dial <= 0 {
		t.Dial = DefaultDialTimeout
	}
	if t.Command <= 0 {
		t.Command = DefaultCommandTimeout
	}
	if t.Literal <= 0 {
		t.Literal = DefaultLiteralTimeout
	}
	return t
}

// New returns the fetcher for srv's protocol. It does no I/O: connections
// are made by Fetch and Test.
func New(srv config.Server, deps Deps) (Fetcher, error) {
	switch srv.Protocol {
	case config.ProtocolIMAPS, config.ProtocolIMAP:
		return NewIMAP(srv, deps)
	case config.ProtocolEWS:
		return NewEWS(srv, deps)
	case config.ProtocolGraph:
		return NewGraph(srv, deps)
	default:
		return nil, fmt.Errorf("fetcher %s: unsupported protocol %q (want imaps, imap, ews or graph)", srv.Name, srv.Protocol)
	}
}
