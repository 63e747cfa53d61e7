// Package publisher publishes mailworker events to NATS JetStream.
//
// It owns the connection (Connect, with an optional in-process server from
// StartEmbedded), the stream (New creates or updates it), publishing with
// Nats-Msg-Id = event id so JetStream drops re-published events within its
// duplicate window, the attachment Object Store (Objects) and reading the
// stream back (Follow). What an event contains and which subject it goes to
// is decided by package pipeline; the ledger that dedupes beyond the window
// lives there too.
package publisher

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mailworker/mailworker/config"
)

// Defaults used when the config or the caller leaves a value zero.
const (
	DefaultStream          = "MAIL"
	DefaultSubjectPrefix   = "mail"
	DefaultDuplicateWindow = 10 * time.Minute
	// DefaultMaxPending bounds the async publishes in flight (the window).
	DefaultMaxPending = 256
	// DefaultAckTimeout bounds the wait for one PubAck, so that a publish to
	// an unreachable or stuck server fails instead of hanging.
	DefaultAckTimeout = 30 * time.Second
	// connectTimeout is the dial timeout when ctx has no deadline.
	connectTimeout = 10 * time.Second
	// reconnectWait is the pause between reconnect attempts.
	reconnectWait = 2 * time.Second
)

// ErrNotConnected is returned by PublishAsync, Publish and Future.Wait when
// the NATS connection is down (or went down while waiting for the ack). It
// is transient: the connection reconnects by itself; see WaitConnected.
var ErrNotConnected = errors.New("nats not connected")

// Connect opens the NATS connection cfg describes. With embedded non-nil it
// connects in process to that server (cfg.URL is ignored) and the
// connection is closed by embedded.Shutdown. The connection reconnects
// forever; state changes are logged. Publishes made while disconnected fail
// at once (no reconnect buffer), so nothing is silently held in memory.
func Connect(ctx context.Context, cfg config.NATS, embedded *Embedded, logger *slog.Logger) (*nats.Conn, error) {
	timeout := connectTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	opts := []nats.Option{
		nats.Name("mailworker"),
		nats.Timeout(timeout),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(reconnectWait),
		nats.ReconnectBufSize(-1),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if err != nil {
				logger.Warn("nats disconnected", "url", nc.ConnectedUrlRedacted(), "err", err)
			} else {
				logger.Info("nats disconnected")
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			logger.Info("nats reconnected", "url", nc.ConnectedUrlRedacted())
		}),
		nats.ClosedHandler(func(*nats.Conn) { logger.Info("nats connection closed") }),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			logger.Warn("nats async error", "err", err)
		}),
	}
	url := cfg.URL
	peer := "embedded"
	if embedded != nil {
		url = ""
		opts = append(opts, nats.InProcessServer(embedded.srv))
		if embedded.token != "" {
			opts = append(opts, nats.Token(embedded.token))
		}
	} else {
		if url == "" {
			return nil, errors.New("nats connect: no url and no embedded server")
		}
		peer = redactURLs(url)
		if cfg.CredentialsFile != "" {
			opts = append(opts, nats.UserCredentials(cfg.CredentialsFile))
		}
		tc, err := tlsConfig(cfg.TLS)
		if err != nil {
			return nil, fmt.Errorf("nats connect %s: %w", peer, err)
		}
		if tc != nil {
			opts = append(opts, nats.Secure(tc))
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("nats connect %s: %w", peer, err)
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("nats connect %s: %w", peer, err)
	}
	if embedded != nil {
		embedded.track(nc)
	}
	logger.Info("nats connected", "url", peer)
	return nc, nil
}

// tlsConfig builds the client TLS config; nil when nothing is set (the URL
// scheme tls:// still selects TLS with system roots).
func tlsConfig(t config.TLS) (*tls.Config, error) {
	if t == (config.TLS{}) {
		return nil, nil
	}
	tc := &tls.Config{ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify, MinVersion: tls.VersionTLS12}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls ca_file %s: no certificates", t.CAFile)
		}
		tc.RootCAs = pool
	}
	if t.CertFile != "" || t.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// redactURLs removes user info (passwords, tokens) from a comma-separated
// URL list, for logs and errors.
func redactURLs(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if at := strings.LastIndex(p, "@"); at >= 0 {
			scheme := ""
			if j := strings.Index(p, "://"); j >= 0 && j < at {
				scheme = p[:j+3]
			}
			p = scheme + "[redacted]@" + p[at+1:]
		}
		parts[i] = p
	}
	return strings.Join(parts, ",")
}

// Option tunes a Publisher.
type Option func(*options)

type options struct {
	maxPending int
	ackTimeout time.Duration
}

// WithMaxPending sets the async publish window (default DefaultMaxPending).
func WithMaxPending(n int) Option { return func(o *options) { o.maxPending = n } }

// WithAckTimeout sets how long one publish waits for its PubAck when the
// caller's ctx has no earlier deadline (default DefaultAckTimeout).
func WithAckTimeout(d time.Duration) Option { return func(o *options) { o.ackTimeout = d } }

// Publisher publishes events to one stream. It is safe for concurrent use.
type Publisher struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	stream string
	prefix string
	logger *slog.Logger

	mu     sync.Mutex
	down   chan struct{} // closed when the connection goes down; replaced on reconnect
	status chan nats.Status
	done   chan struct{}
}

// New creates or updates the stream cfg describes (see EnsureStream) and
// returns a Publisher on nc. Close stops its status watcher; nc stays the
// caller's.
func New(ctx context.Context, nc *nats.Conn, cfg config.NATS, logger *slog.Logger, opts ...Option) (*Publisher, error) {
	o := options{maxPending: DefaultMaxPending, ackTimeout: DefaultAckTimeout}
	for _, f := range opts {
		f(&o)
	}
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(o.maxPending),
		jetstream.WithPublishAsyncTimeout(o.ackTimeout))
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	if _, err := EnsureStream(ctx, js, cfg); err != nil {
		return nil, err
	}
	p := &Publisher{
		nc:     nc,
		js:     js,
		stream: streamName(cfg),
		prefix: subjectPrefix(cfg),
		logger: logger,
		down:   make(chan struct{}),
		status: nc.StatusChanged(nats.CONNECTED, nats.DISCONNECTED, nats.RECONNECTING, nats.CLOSED),
		done:   make(chan struct{}),
	}
	p.refresh()
	go p.watch()
	return p, nil
}

// watch re-evaluates the connection state on every status change (see
// refresh), so that Futures waiting for acks that will never come fail at
// once when the connection drops.
func (p *Publisher) watch() {
	defer close(p.done)
	for range p.status {
		p.refresh()
	}
}

// refresh makes p.down match the connection's current state, rather than
// the status event that triggered it (events may arrive late), and returns
// it: closed while the connection is down, open while it is up.
func (p *Publisher) refresh() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	up := p.nc.IsConnected()
	select {
	case <-p.down:
		if up {
			p.down = make(chan struct{})
		}
	default:
		if !up {
			close(p.down)
		}
	}
	return p.down
}

// Close stops the status watcher. It does not close the connection.
func (p *Publisher) Close() {
	p.nc.RemoveStatusListener(p.status)
	<-p.done
}

// JetStream returns the JetStream context (for Follow, Objects, tests).
func (p *Publisher) JetStream() jetstream.JetStream { return p.js }

// Stream is the stream's name.
func (p *Publisher) Stream() string { return p.stream }

// Subject returns <prefix>.<server>.<token>.
func (p *Publisher) Subject(server, token string) string {
	return p.prefix + "." + server + "." + token
}

// headerAllowance is what PublishAsync reserves of the server's max
// payload for the message's headers (Nats-Msg-Id and the protocol line).
const headerAllowance = 256

// MaxPayload returns the largest encoded event PublishAsync accepts: the
// connection's max payload (announced by the server; NATS' default is
// 1 MB) less an allowance for headers. 0 means unknown (not connected
// yet): no check.
func (p *Publisher) MaxPayload() int64 {
	mp := p.nc.MaxPayload()
	if mp <= headerAllowance {
		return 0
	}
	return mp - headerAllowance
}

// Healthy reports whether the connection is up.
func (p *Publisher) Healthy() bool { return p.nc.IsConnected() }

// WaitConnected returns nil once the connection is up, or ctx's error.
// The pipeline calls it to pause while NATS is unreachable.
func (p *Publisher) WaitConnected(ctx context.Context) error {
	if p.nc.IsConnected() {
		return nil
	}
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for nats: %w", ctx.Err())
		case <-t.C:
			if p.nc.IsConnected() {
				return nil
			}
		}
	}
}

// Future is a publish in flight. Its result, once known, is kept: Wait
// and Poll may be called any number of times, from any goroutine.
type Future struct {
	paf     jetstream.PubAckFuture
	down    <-chan struct{}
	subject string
	id      string

	sem  chan struct{} // held while reading paf's one-shot channels
	done bool
	ack  *jetstream.PubAck
	err  error
}

// Wait returns the PubAck (ack.Duplicate is true when JetStream already
// had an event with this id within its duplicate window). It fails with
// ctx's error (the publish may still complete: Wait again), with
// ErrNotConnected when the connection drops, or with
// jetstream.ErrAsyncPublishTimeout after the ack timeout.
func (f *Future) Wait(ctx context.Context) (*jetstream.PubAck, error) {
	select {
	case f.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("publish %s id %s: %w", f.subject, f.id, ctx.Err())
	}
	defer func() { <-f.sem }()
	if !f.done {
		select {
		case ack := <-f.paf.Ok():
			f.ack = ack
		case err := <-f.paf.Err():
			f.err = fmt.Errorf("publish %s id %s: %w", f.subject, f.id, err)
		case <-f.down:
			f.err = fmt.Errorf("publish %s id %s: %w", f.subject, f.id, ErrNotConnected)
		case <-ctx.Done():
			return nil, fmt.Errorf("publish %s id %s: %w", f.subject, f.id, ctx.Err())
		}
		f.done = true
	}
	return f.ack, f.err
}

// Poll returns Wait's result without blocking; done is false while the
// ack is outstanding (or another goroutine is waiting on it right now).
func (f *Future) Poll() (ack *jetstream.PubAck, err error, done bool) {
	select {
	case f.sem <- struct{}{}:
	default:
		return nil, nil, false
	}
	defer func() { <-f.sem }()
	if !f.done {
		select {
		case ack := <-f.paf.Ok():
			f.ack = ack
		case err := <-f.paf.Err():
			f.err = fmt.Errorf("publish %s id %s: %w", f.subject, f.id, err)
		case <-f.down:
			f.err = fmt.Errorf("publish %s id %s: %w", f.subject, f.id, ErrNotConnected)
		default:
			return nil, nil, false
		}
		f.done = true
	}
	return f.ack, f.err, true
}

// PublishAsync encodes ev as JSON (Encode) and publishes it on subject with
// Nats-Msg-Id = ev.ID. It returns once the message is handed to the
// connection; at most the window's worth of publishes are in flight (a
// full window makes it wait briefly, then fail). It fails at once with
// ErrNotConnected while the connection is down, and with a *TooLargeError
// (errors.Is ErrTooLarge) when the encoded event exceeds MaxPayload:
// nothing is published then.
func (p *Publisher) PublishAsync(ctx context.Context, subject string, ev *Event) (*Future, error) {
	if ev.ID == "" {
		return nil, fmt.Errorf("publish %s: event without id", subject)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("publish %s id %s: %w", subject, ev.ID, err)
	}
	down := p.refresh()
	select {
	case <-down:
		return nil, fmt.Errorf("publish %s id %s: %w", subject, ev.ID, ErrNotConnected)
	default:
	}
	data, err := Encode(ev)
	if err != nil {
		return nil, fmt.Errorf("publish %s id %s: encode: %w", subject, ev.ID, err)
	}
	if limit := p.MaxPayload(); limit > 0 && int64(len(data)) > limit {
		return nil, fmt.Errorf("publish %s id %s: %w", subject, ev.ID, &TooLargeError{Size: int64(len(data)), Max: limit})
	}
	paf, err := p.js.PublishAsync(subject, data, jetstream.WithMsgID(ev.ID))
	if err != nil {
		if errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrReconnectBufExceeded) || !p.nc.IsConnected() {
			err = fmt.Errorf("%w: %w", ErrNotConnected, err)
		}
		return nil, fmt.Errorf("publish %s id %s: %w", subject, ev.ID, err)
	}
	return &Future{paf: paf, down: down, subject: subject, id: ev.ID, sem: make(chan struct{}, 1)}, nil
}

// Publish is PublishAsync followed by Wait.
func (p *Publisher) Publish(ctx context.Context, subject string, ev *Event) (*jetstream.PubAck, error) {
	f, err := p.PublishAsync(ctx, subject, ev)
	if err != nil {
		return nil, err
	}
	return f.Wait(ctx)
}
