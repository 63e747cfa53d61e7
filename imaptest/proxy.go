package imaptest

import (
	"bytes"
	"crypto/tls"
	"net"
	"sync"
	"testing"
	"time"
)

// Proxy is a TLS-terminating TCP proxy between a client and an IMAP
// server, for network failure tests. It presents the server's own
// certificate (clients trust the same CAFile) and sees the plaintext, so
// it can freeze the conversation at an exact point: mid-body, at LOGOUT,
// at the greeting.
//
// A freeze is what a NAT box or firewall does when it drops a flow's
// state: every connection open at that moment stops moving bytes in either
// direction and is never closed, and for the hold time new connections are
// accepted but never answered (no TLS handshake). After the hold, new
// connections work again; the frozen ones stay frozen until cleanup.
type Proxy struct {
	t      testing.TB
	ln     net.Listener
	target string
	front  *tls.Config // presented to clients
	back   *tls.Config // used towards the server

	mu       sync.Mutex
	conns    map[*proxyConn]bool // open, served connections
	held     []net.Conn          // connections accepted during a freeze, never answered
	trig     *freezeTrigger      // armed trigger, nil when none
	frozenAt time.Time
	thawAt   time.Time
	frozen   chan struct{} // closed at the freeze
	accepted int
	chunk    int           // trickle: bytes per write server→client, 0 = off
	every    time.Duration // trickle: pause between writes

	done chan struct{}
	wg   sync.WaitGroup
}

// freezeTrigger says when to freeze; exactly one field is set.
type freezeTrigger struct {
	serverBytes int64  // after this many plaintext bytes from the server on one connection
	clientLine  []byte // before forwarding client data containing this (case-insensitive)
	greeting    bool   // before forwarding the greeting of the next connection
	hold        time.Duration
}

type proxyConn struct {
	client, server net.Conn
	fromServer     int64         // plaintext bytes forwarded server→client
	frozen         chan struct{} // closed when frozen
	freezeOnce     sync.Once
}

func (c *proxyConn) freeze() { c.freezeOnce.Do(func() { close(c.frozen) }) }

func (c *proxyConn) isFrozen() bool {
	select {
	case <-c.frozen:
		return true
	default:
		return false
	}
}

// StartProxy starts a proxy in front of Dovecot's imaps port.
func (d *Dovecot) StartProxy(t testing.TB) *Proxy {
	return StartProxy(t, d.imapsAdr, d.certs.serverConfig(), d.certs.clientConfig())
}

// StartProxy starts a proxy in front of the server's imaps port.
func (m *MemServer) StartProxy(t testing.TB) *Proxy {
	return StartProxy(t, m.addr, m.certs.serverConfig(), m.certs.clientConfig())
}

// StartProxy starts a proxy on a free loopback port that accepts TLS with
// front and forwards the plaintext over TLS (back) to target. It is
// stopped at cleanup.
func StartProxy(t testing.TB, target string, front, back *tls.Config) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("imaptest: proxy listen: %v", err)
	}
	p := &Proxy{t: t, ln: ln, target: target, front: front, back: back,
		conns: map[*proxyConn]bool{}, frozen: make(chan struct{}), done: make(chan struct{})}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.stop)
	return p
}

// Addr is the proxy's host:port; Port its port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }
func (p *Proxy) Port() int    { return portOf(p.Addr()) }

// FreezeAfterServerBytes arms a freeze for when one connection has received
// n plaintext bytes from the server (the freeze falls exactly after byte
// n); new connections are not answered for hold after it.
func (p *Proxy) FreezeAfterServerBytes(n int64, hold time.Duration) {
	p.arm(&freezeTrigger{serverBytes: n, hold: hold})
}

// FreezeOnClient arms a freeze for when a client sends data containing s
// (case-insensitive), e.g. " LOGOUT\r\n"; that data is not forwarded.
func (p *Proxy) FreezeOnClient(s string, hold time.Duration) {
	p.arm(&freezeTrigger{clientLine: bytes.ToUpper([]byte(s)), hold: hold})
}

// FreezeOnGreeting arms a freeze for the next connection, after its TLS
// handshake and before the server's greeting reaches the client.
func (p *Proxy) FreezeOnGreeting(hold time.Duration) {
	p.arm(&freezeTrigger{greeting: true, hold: hold})
}

func (p *Proxy) arm(tr *freezeTrigger) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.frozenAt.IsZero() {
		p.t.Fatalf("imaptest: proxy already froze once")
	}
	p.trig = tr
}

// Frozen is closed when the armed freeze happened.
func (p *Proxy) Frozen() <-chan struct{} { return p.frozen }

// FrozenAt and ThawAt are when the freeze began and when new connections
// are answered again (zero before the freeze).
func (p *Proxy) FrozenAt() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.frozenAt
}

func (p *Proxy) ThawAt() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.thawAt
}

// Accepted is the number of connections accepted so far.
func (p *Proxy) Accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted
}

// Trickle slows server→client traffic: what the server sends in one go is
// forwarded in writes of chunk bytes with a pause of every between them
// (chunk 0 turns it off). Short responses pass unhindered; a message body
// trickles.
func (p *Proxy) Trickle(chunk int, every time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.chunk, p.every = chunk, every
}

// fire freezes every open connection and starts the hold.
func (p *Proxy) fire() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.trig == nil {
		return
	}
	now := time.Now()
	p.frozenAt, p.thawAt = now, now.Add(p.trig.hold)
	p.trig = nil
	for c := range p.conns {
		c.freeze()
	}
	close(p.frozen)
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		raw, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		p.accepted++
		if !p.frozenAt.IsZero() && time.Now().Before(p.thawAt) {
			p.held = append(p.held, raw) // accepted, never answered
			p.mu.Unlock()
			continue
		}
		p.mu.Unlock()
		p.wg.Add(1)
		go p.serve(raw)
	}
}

func (p *Proxy) serve(raw net.Conn) {
	defer p.wg.Done()
	client := tls.Server(raw, p.front)
	raw.SetDeadline(time.Now().Add(30 * time.Second))
	if err := client.Handshake(); err != nil {
		raw.Close()
		return
	}
	raw.SetDeadline(time.Time{})
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 30 * time.Second}, Config: p.back}
	server, err := d.Dial("tcp", p.target)
	if err != nil {
		client.Close()
		return
	}
	c := &proxyConn{client: client, server: server, frozen: make(chan struct{})}
	p.mu.Lock()
	p.conns[c] = true
	greet := p.trig != nil && p.trig.greeting
	p.mu.Unlock()
	if greet {
		p.fire()
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.pump(c, true) }()
	go func() { defer wg.Done(); p.pump(c, false) }()
	wg.Wait()
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// pump copies one direction of c until an error, obeying freezes.
func (p *Proxy) pump(c *proxyConn, fromServer bool) {
	src, dst := c.client, c.server
	if fromServer {
		src, dst = c.server, c.client
	}
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !p.forward(c, dst, buf[:n], fromServer) {
			break
		}
		if err != nil {
			break
		}
	}
	if c.isFrozen() {
		<-p.done // a frozen connection is never closed
	}
	c.client.Close()
	c.server.Close()
}

// forward writes b to dst unless c is (or becomes) frozen, in which case it
// blocks until the proxy stops; false means stop pumping.
func (p *Proxy) forward(c *proxyConn, dst net.Conn, b []byte, fromServer bool) bool {
	p.mu.Lock()
	tr := p.trig
	chunk, every := p.chunk, p.every
	p.mu.Unlock()
	if tr != nil {
		switch {
		case fromServer && tr.serverBytes > 0 && c.fromServer+int64(len(b)) >= tr.serverBytes:
			k := max(tr.serverBytes-c.fromServer, 0) // armed after the connection passed n: freeze now
			if _, err := dst.Write(b[:k]); err != nil {
				return false
			}
			c.fromServer += k
			b = b[k:]
			p.fire()
		case !fromServer && tr.clientLine != nil && bytes.Contains(bytes.ToUpper(b), tr.clientLine):
			p.fire()
		}
	}
	if c.isFrozen() {
		<-p.done
		return false
	}
	if !fromServer || chunk <= 0 {
		_, err := dst.Write(b)
		if fromServer {
			c.fromServer += int64(len(b))
		}
		return err == nil
	}
	for len(b) > 0 {
		k := min(chunk, len(b))
		if _, err := dst.Write(b[:k]); err != nil {
			return false
		}
		c.fromServer += int64(k)
		b = b[k:]
		if len(b) == 0 {
			break
		}
		select {
		case <-time.After(every):
		case <-p.done:
			return false
		}
		if c.isFrozen() {
			<-p.done
			return false
		}
	}
	return true
}

func (p *Proxy) stop() {
	close(p.done)
	p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.client.Close()
		c.server.Close()
	}
	for _, h := range p.held {
		h.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}
