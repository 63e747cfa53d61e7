// Package stallconn gives network connections a no-progress deadline: a
// read or write that moves no byte for the stall timeout fails with a
// *Error (errors.Is ErrStalled) and the connection is closed, however
// long the operation's total deadline still runs. A slow transfer that
// keeps moving is never cut: every Read and every written chunk starts a
// fresh stall period.
//
// It exists for the silent network failure that total deadlines handle
// badly: a NAT box or firewall forgets the flow, the socket stays open and
// no byte ever arrives again. A message body is allowed minutes (a 50 MB
// message on a slow link), a stall should end the step after a minute.
//
// Conn wraps any net.Conn, so every protocol client gets the same
// behaviour: IMAP wraps its dialled connection (TLS runs on top of it),
// HTTP clients use Transport or DialContext. Dialer also turns on TCP
// keepalive, so a dead peer is found by the kernel as well.
package stallconn

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"time"
)

// DefaultTimeout is the stall timeout of a server without stall_timeout.
const DefaultTimeout = 60 * time.Second

// Keepalive settings of Dialer: the first probe after a minute without
// traffic, then every 15 s; four unanswered probes end the connection
// (about two minutes for a silently dead peer).
var Keepalive = net.KeepAliveConfig{Enable: true, Idle: 60 * time.Second, Interval: 15 * time.Second, Count: 4}

// ErrStalled is matched (errors.Is) by every *Error.
var ErrStalled = errors.New("stalled")

// writeChunk bounds one underlying Write, so a large write that moves
// slowly restarts the stall period as its chunks go out.
const writeChunk = 16 << 10

// Error reports a stall: nothing moved for Silent (at least the stall
// timeout) while the connection was doing Step.
type Error struct {
	Step   string        // what the connection was doing, "" when unnamed
	Dir    string        // "received" (a read stalled) or "sent" (a write stalled)
	Silent time.Duration // how long no byte moved
	Limit  time.Duration // the stall timeout in force
}

func (e *Error) Error() string {
	// Whole seconds keep the text of repeated stalls equal (the worker logs
	// a server's error again only when it changes).
	silent := e.Silent.Round(10 * time.Millisecond)
	if e.Silent >= time.Second {
		silent = e.Silent.Round(time.Second)
	}
	s := fmt.Sprintf("stalled: no byte %s for %s", e.Dir, silent)
	if e.Step != "" {
		s += " during " + e.Step
	}
	return s + fmt.Sprintf(" (stall_timeout %s); connection closed", e.Limit)
}

// Is reports ErrStalled, and os.ErrDeadlineExceeded so that code which
// treats a deadline as a timeout does so for a stall too.
func (e *Error) Is(target error) bool {
	return target == ErrStalled || target == os.ErrDeadlineExceeded
}

// Timeout and Temporary make *Error a net.Error: a timeout, not to be
// retried on the same connection (crypto/tls then keeps it as the
// connection's permanent error).
func (e *Error) Timeout() bool   { return true }
func (e *Error) Temporary() bool { return false }

// Conn is a net.Conn with a stall timeout. Deadlines set with
// SetDeadline, SetReadDeadline and SetWriteDeadline still apply as total
// limits; the stall deadline is the earlier of the two for each call.
//
// Stall detection is on from the start. Pause turns it off while the
// owner knowingly leaves the connection silent (waiting on something
// else with no request outstanding); SetStep turns it on again and names
// what the connection does next, for the error.
type Conn struct {
	net.Conn
	timeout time.Duration

	mu      sync.Mutex
	step    string
	paused  bool
	rd, wr  direction
	stalled *Error
	lastIn  time.Time // when a byte was last received
}

// direction is the state of reads or of writes.
type direction struct {
	total   time.Time // deadline set by the owner, zero = none
	pending int       // calls in progress
	since   time.Time // start of the current silence (call start, progress or resume)
	stallAt time.Time // stall deadline applied to the pending call, zero = none
}

// New wraps c with stall timeout d; d <= 0 means DefaultTimeout.
func New(c net.Conn, d time.Duration) *Conn {
	if d <= 0 {
		d = DefaultTimeout
	}
	return &Conn{Conn: c, timeout: d}
}

// Of returns the *Conn under c (c itself, or the connection a *tls.Conn
// runs on), or nil.
func Of(c net.Conn) *Conn {
	for c != nil {
		switch v := c.(type) {
		case *Conn:
			return v
		case *tls.Conn:
			c = v.NetConn()
		default:
			return nil
		}
	}
	return nil
}

// LastReceived is when a byte was last received (zero before the first).
func (c *Conn) LastReceived() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastIn
}

// StallTimeout is the connection's stall timeout.
func (c *Conn) StallTimeout() time.Duration { return c.timeout }

// SetStep names what the connection does from now on ("greeting",
// "reading message body", "LOGOUT") and turns stall detection on: a call
// already blocked gets a fresh stall period.
func (c *Conn) SetStep(step string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.step = step
	if c.paused {
		c.paused = false
		now := time.Now()
		c.rd.since, c.wr.since = now, now
		c.applyLocked(&c.rd, c.Conn.SetReadDeadline, now)
		c.applyLocked(&c.wr, c.Conn.SetWriteDeadline, now)
	}
}

// Pause turns stall detection off until the next SetStep; the owner's
// total deadlines stay.
func (c *Conn) Pause() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.paused {
		return
	}
	c.paused = true
	now := time.Now()
	c.applyLocked(&c.rd, c.Conn.SetReadDeadline, now)
	c.applyLocked(&c.wr, c.Conn.SetWriteDeadline, now)
}

// Stalled returns the stall that closed the connection, or nil. Protocol
// clients often turn the error of a failed read into text or replace it
// with "use of closed connection"; their callers ask here for the cause.
func (c *Conn) Stalled() *Error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stalled
}

// applyLocked sets the underlying deadline of d for a call in progress:
// the owner's total deadline, or the stall deadline when it is earlier and
// detection is on.
func (c *Conn) applyLocked(d *direction, set func(time.Time) error, now time.Time) {
	d.stallAt = time.Time{}
	if d.pending == 0 {
		set(d.total)
		return
	}
	dl := d.total
	if !c.paused {
		s := d.since.Add(c.timeout)
		if dl.IsZero() || s.Before(dl) {
			dl, d.stallAt = s, s
		}
	}
	set(dl)
}

// begin marks a call of d in progress and applies its deadline.
func (c *Conn) begin(d *direction, set func(time.Time) error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	d.pending++
	d.since = now
	c.applyLocked(d, set, now)
}

// end finishes a call of d; it turns a timeout caused by the stall
// deadline into a *Error and closes the connection.
func (c *Conn) end(d *direction, dir string, n int, err error) error {
	c.mu.Lock()
	d.pending--
	stallAt, since := d.stallAt, d.since
	if n > 0 {
		d.since = time.Now()
		if d == &c.rd {
			c.lastIn = d.since
		}
	}
	if d.pending == 0 {
		d.stallAt = time.Time{}
	}
	var se *Error
	if err != nil && n == 0 && errors.Is(err, os.ErrDeadlineExceeded) && !stallAt.IsZero() && !time.Now().Before(stallAt) {
		se = &Error{Step: c.step, Dir: dir, Silent: time.Since(since), Limit: c.timeout}
		if c.stalled == nil {
			c.stalled = se
		}
	}
	c.mu.Unlock()
	if se != nil {
		c.Conn.Close() // the other direction and later calls fail at once
		return se
	}
	return err
}

func (c *Conn) Read(p []byte) (int, error) {
	if se := c.Stalled(); se != nil {
		return 0, se
	}
	c.begin(&c.rd, c.Conn.SetReadDeadline)
	n, err := c.Conn.Read(p)
	return n, c.end(&c.rd, "received", n, err)
}

// Write writes p in chunks, each with a fresh stall period.
func (c *Conn) Write(p []byte) (int, error) {
	if se := c.Stalled(); se != nil {
		return 0, se
	}
	written := 0
	for len(p) > 0 {
		chunk := p[:min(len(p), writeChunk)]
		c.begin(&c.wr, c.Conn.SetWriteDeadline)
		n, err := c.Conn.Write(chunk)
		err = c.end(&c.wr, "sent", n, err)
		written += n
		p = p[n:]
		if err != nil {
			if n > 0 && len(p) > 0 && errors.Is(err, os.ErrDeadlineExceeded) && !errors.Is(err, ErrStalled) && c.stallDeadlineOnly() {
				continue // it moved: the stall period starts again
			}
			return written, err
		}
	}
	return written, nil
}

// stallDeadlineOnly reports whether the write deadline that expired can
// only have been a stall deadline (the owner's total one is still ahead).
func (c *Conn) stallDeadlineOnly() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.wr.total.IsZero() || time.Now().Before(c.wr.total)
}

func (c *Conn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

func (c *Conn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rd.total = t
	c.applyLocked(&c.rd, c.Conn.SetReadDeadline, time.Now())
	return nil
}

func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.wr.total = t
	c.applyLocked(&c.wr, c.Conn.SetWriteDeadline, time.Now())
	return nil
}

// NetConn returns the wrapped connection.
func (c *Conn) NetConn() net.Conn { return c.Conn }

// Dialer returns a dialer with connect timeout dial (0 = none) and TCP
// keepalive (Keepalive).
func Dialer(dial time.Duration) *net.Dialer {
	return &net.Dialer{Timeout: dial, KeepAliveConfig: Keepalive}
}

// DialContext returns a dial function (for http.Transport.DialContext)
// whose connections have stall timeout d.
func DialContext(dialer *net.Dialer, d time.Duration) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dialer.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return New(c, d), nil
	}
}

// Transport returns a clone of base (nil = http.DefaultTransport) whose
// connections have stall timeout d and TCP keepalive. Idle pooled
// connections are closed after d/2, before a stall deadline could trip on
// a connection the pool keeps reading.
func Transport(base *http.Transport, d time.Duration) *http.Transport {
	if base == nil {
		base = http.DefaultTransport.(*http.Transport)
	}
	if d <= 0 {
		d = DefaultTimeout
	}
	t := base.Clone()
	t.DialContext = DialContext(Dialer(30*time.Second), d)
	if t.IdleConnTimeout == 0 || t.IdleConnTimeout > d/2 {
		t.IdleConnTimeout = d / 2
	}
	return t
}
