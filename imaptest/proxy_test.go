package imaptest

import (
	"bufio"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

// greet dials the proxy with TLS and reads the greeting line, each within
// wait.
func greet(p *Proxy, pool *tls.Config, wait time.Duration) (string, error) {
	raw, err := net.DialTimeout("tcp", p.Addr(), 5*time.Second)
	if err != nil {
		return "", err
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(wait))
	c := tls.Client(raw, pool)
	if err := c.Handshake(); err != nil {
		return "", err
	}
	raw.SetDeadline(time.Now().Add(wait))
	return bufio.NewReader(c).ReadString('\n')
}

// TestProxyFreezeOnGreeting: the proxy passes a greeting through; armed,
// it freezes the next connection after the TLS handshake, answers no new
// connection for the hold (not even the handshake), and then serves new
// connections again.
func TestProxyFreezeOnGreeting(t *testing.T) {
	m := StartMem(t, MemOptions{})
	p := m.StartProxy(t)
	cfg := m.certs.clientConfig()
	if line, err := greet(p, cfg, 5*time.Second); err != nil || !strings.HasPrefix(line, "* OK") {
		t.Fatalf("greeting through the proxy = %q, %v", line, err)
	}
	const hold = 3 * time.Second
	p.FreezeOnGreeting(hold)
	if _, err := greet(p, cfg, 300*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("frozen greeting: %v; want a read timeout after the handshake", err)
	}
	select {
	case <-p.Frozen():
	default:
		t.Fatal("Frozen not closed")
	}
	_, err := greet(p, cfg, 300*time.Millisecond)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("connection during the hold: %v; want the handshake to time out", err)
	}
	time.Sleep(time.Until(p.ThawAt()) + 50*time.Millisecond)
	if line, err := greet(p, cfg, 5*time.Second); err != nil || !strings.HasPrefix(line, "* OK") {
		t.Fatalf("greeting after the hold = %q, %v", line, err)
	}
	if got := p.Accepted(); got != 4 {
		t.Fatalf("Accepted = %d; want 4", got)
	}
}
