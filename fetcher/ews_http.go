package fetcher

// HTTP plumbing shared by the EWS and Graph fetchers: per-call timeouts,
// throttling waits (Retry-After, BackOffMilliseconds), the per-mailbox
// request semaphore and the redacted email_debug transcript.

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mailworker/mailworker/stallconn"
)

// ErrThrottled is returned (wrapped) when an EWS or Graph server kept
// throttling the requests (HTTP 429/503/504, ErrorServerBusy) after
// MaxThrottleRetries waits, or asked for a wait longer than MaxThrottleWait.
// The run stops without checkpointing; the next scheduled run retries.
var ErrThrottled = errors.New("server is throttling requests")

const (
	// MaxThrottleWait is the longest server-requested wait honoured within a
	// run; longer waits end the run with ErrThrottled.
	MaxThrottleWait = 5 * time.Minute
	// MaxThrottleRetries is how many throttled answers one call tolerates.
	MaxThrottleRetries = 5
	// defaultThrottleWait applies when a throttled answer names no delay.
	defaultThrottleWait = 2 * time.Second
	// debugBodyLimit truncates bodies in the email_debug transcript.
	debugBodyLimit = 2048
)

// exchangeHTTP sends the requests of one EWS or Graph fetcher.
type exchangeHTTP struct {
	server  string // config name, for errors and logs
	client  *http.Client
	log     *slog.Logger
	debug   bool
	timeout time.Duration // per call without a body to stream
	sem     chan struct{} // bounds concurrent requests; nil = unbounded
}

func newExchangeHTTP(server string, deps Deps, debug bool, rt http.RoundTripper, concurrency int) *exchangeHTTP {
	h := &exchangeHTTP{
		server:  server,
		client:  &http.Client{Transport: rt},
		log:     deps.Logger,
		debug:   debug,
		timeout: deps.Timeouts.Command,
	}
	if concurrency > 0 {
		h.sem = make(chan struct{}, concurrency)
	}
	return h
}

// newTransport returns a transport with its own connection pool, using
// tlsConf when non-nil. Its connections have TCP keepalive and the stall
// timeout stall on every read and write (see package stallconn).
func newTransport(tlsConf *tls.Config, stall time.Duration) *http.Transport {
	t := stallconn.Transport(nil, stall)
	if tlsConf != nil {
		t.TLSClientConfig = tlsConf.Clone()
	}
	t.MaxConnsPerHost = 8
	return t
}

// throttleError is what a retry policy returns for a throttled answer.
type throttleError struct {
	wait time.Duration
	why  string
}

func (e *throttleError) Error() string { return e.why }

// call is one logical request. build makes a fresh *http.Request for each
// attempt; check inspects a response and returns a *throttleError to retry
// after a wait, another error to fail, or nil to accept it.
type call struct {
	op    string // operation name for errors and logs (SOAP operation or Graph verb)
	build func(ctx context.Context) (*http.Request, error)
	// stream: the body is streamed by the caller (MIME); the timeout then
	// is the literal timeout, and the body is not logged.
	stream  bool
	timeout time.Duration
	// logBody is the request body for the transcript ("" = none).
	logBody string
}

// do runs c, honouring throttling waits, and returns the accepted response.
// The caller must close its body; closing releases the semaphore slot and
// the per-call timeout.
func (h *exchangeHTTP) do(ctx context.Context, c call, check func(*http.Response) error) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		resp, err := h.once(ctx, c)
		if err != nil {
			return nil, err
		}
		err = check(resp)
		if err == nil {
			return resp, nil
		}
		resp.Body.Close()
		var te *throttleError
		if !errors.As(err, &te) {
			return nil, err
		}
		if err := h.wait(ctx, c.op, te, attempt); err != nil {
			return nil, err
		}
	}
}

// wait sleeps out a throttled answer to attempt (from 0) of op, or fails
// with ErrThrottled when the wait is too long or the attempts are used up.
func (h *exchangeHTTP) wait(ctx context.Context, op string, te *throttleError, attempt int) error {
	if attempt >= MaxThrottleRetries {
		return fmt.Errorf("%s %s: %s, still throttled after %d waits: %w", h.server, op, te.why, attempt, ErrThrottled)
	}
	wait := te.wait
	if wait <= 0 {
		wait = defaultThrottleWait
	}
	if wait > MaxThrottleWait {
		return fmt.Errorf("%s %s: %s, server asks to wait %s (more than %s): %w", h.server, op, te.why, wait, MaxThrottleWait, ErrThrottled)
	}
	h.log.Warn("exchange server throttling, waiting", "account", h.server, "op", op, "wait", wait, "reason", te.why)
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return fmt.Errorf("%s %s: waiting out throttling: %w", h.server, op, context.Cause(ctx))
	case <-t.C:
		return nil
	}
}

// once sends one attempt of c.
func (h *exchangeHTTP) once(ctx context.Context, c call) (*http.Response, error) {
	timeout := c.timeout
	if timeout <= 0 {
		timeout = h.timeout
	}
	cctx, cancel := context.WithTimeoutCause(ctx, timeout, fmt.Errorf("%s: %w after %s", c.op, ErrTimeout, timeout))
	if h.sem != nil {
		select {
		case h.sem <- struct{}{}:
		case <-cctx.Done():
			cancel()
			return nil, fmt.Errorf("%s %s: %w", h.server, c.op, context.Cause(cctx))
		}
	}
	release := func() {
		cancel()
		if h.sem != nil {
			<-h.sem
		}
	}
	req, err := c.build(cctx)
	if err != nil {
		release()
		return nil, fmt.Errorf("%s %s: build request: %w", h.server, c.op, err)
	}
	if h.debug {
		h.log.Debug("exchange request", "account", h.server, "op", c.op, "method", req.Method,
			"url", redactURL(req.URL), "headers", redactHeaders(req.Header), "body", truncate(c.logBody))
	}
	resp, err := h.client.Do(req)
	if err != nil {
		// Read the cause before release cancels cctx: a per-call timeout
		// is reported as ErrTimeout, not as a bare "context canceled".
		if cause := context.Cause(cctx); cause != nil && ctx.Err() == nil {
			err = fmt.Errorf("%w (%w)", cause, err)
		} else if errors.Is(err, stallconn.ErrStalled) {
			err = fmt.Errorf("HTTP request and response headers: %w", err) // the caller adds server and op
		}
		release()
		return nil, fmt.Errorf("%s %s %s: %w", h.server, c.op, redactURL(req.URL), err)
	}
	resp.Body = &releasingBody{ReadCloser: resp.Body, what: h.server + " " + c.op, release: release, timedOut: func() error {
		if ctx.Err() == nil {
			return context.Cause(cctx) // ErrTimeout once the per-call deadline passed
		}
		return nil
	}}
	if h.debug {
		attrs := []any{"account", h.server, "op", c.op, "status", resp.StatusCode}
		if !c.stream || resp.StatusCode >= 300 {
			// Read the (small) body so it can be logged, then replay it.
			b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
			if err != nil {
				resp.Body.Close()
				return nil, fmt.Errorf("%s %s: read response: %w", h.server, c.op, err)
			}
			rest := resp.Body
			resp.Body = &releasingBody{ReadCloser: io.NopCloser(io.MultiReader(bytes.NewReader(b), rest)), release: func() { rest.Close() }}
			attrs = append(attrs, "body", truncate(string(b)))
		} else {
			attrs = append(attrs, "body", "[message content not logged]")
		}
		h.log.Debug("exchange response", attrs...)
	}
	return resp, nil
}

// releasingBody runs release once when the body is closed, and reports a
// read cut short by the per-call deadline as ErrTimeout.
type releasingBody struct {
	io.ReadCloser
	what     string // server and operation, for a stall
	once     sync.Once
	release  func()
	timedOut func() error // nil, or the per-call timeout cause
}

func (b *releasingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF && b.timedOut != nil {
		if cause := b.timedOut(); cause != nil {
			err = fmt.Errorf("%w (%w)", cause, err)
		} else if errors.Is(err, stallconn.ErrStalled) {
			err = fmt.Errorf("%s: HTTP response body: %w", b.what, err)
		}
	}
	return n, err
}

func (b *releasingBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.release)
	return err
}

// retryAfter parses a Retry-After header (delta seconds or an HTTP date).
func retryAfter(h http.Header) time.Duration {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(v); err == nil && n >= 0 {
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return time.Until(t)
	}
	return 0
}

func truncate(s string) string {
	if len(s) > debugBodyLimit {
		return s[:debugBodyLimit] + "…[truncated]"
	}
	return s
}

// redactURL drops user info from u; query strings of EWS and Graph URLs
// carry no secrets (delta and skip tokens are state, not credentials).
func redactURL(u *url.URL) string {
	if u == nil {
		return ""
	}
	return u.Redacted()
}

func redactHeaders(h http.Header) map[string]string {
	out := make(map[string]string, len(h))
	for k, v := range h {
		if strings.EqualFold(k, "Authorization") || strings.EqualFold(k, "Cookie") {
			out[k] = "[redacted]"
			continue
		}
		out[k] = strings.Join(v, ", ")
	}
	return out
}
