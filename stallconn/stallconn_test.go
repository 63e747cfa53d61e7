package stallconn_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mailworker/mailworker/stallconn"
)

// pair returns a loopback TCP connection wrapped with stall timeout d, and
// its peer.
func pair(t *testing.T, d time.Duration) (*stallconn.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(acc)
			return
		}
		acc <- c
	}()
	c, err := stallconn.Dialer(5*time.Second).Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer, ok := <-acc
	if !ok {
		t.Fatal("accept failed")
	}
	sc := stallconn.New(c, d)
	t.Cleanup(func() { sc.Close(); peer.Close() })
	return sc, peer
}

func TestReadStalls(t *testing.T) {
	const d = 300 * time.Millisecond
	c, peer := pair(t, d)
	c.SetStep("greeting")
	start := time.Now()
	_, err := c.Read(make([]byte, 10))
	took := time.Since(start)
	var se *stallconn.Error
	if !errors.As(err, &se) || !errors.Is(err, stallconn.ErrStalled) {
		t.Fatalf("Read = %v; want a *stallconn.Error", err)
	}
	if se.Step != "greeting" || se.Dir != "received" || se.Silent < d || se.Limit != d {
		t.Fatalf("error = %+v", se)
	}
	if took < d || took > d+5*time.Second {
		t.Fatalf("stall reported after %s; want about %s", took, d)
	}
	if !strings.Contains(err.Error(), "no byte received") || !strings.Contains(err.Error(), "during greeting") {
		t.Fatalf("message %q names neither the direction nor the step", err)
	}
	if c.Stalled() != se {
		t.Fatalf("Stalled() = %v; want the returned error", c.Stalled())
	}
	// The connection is closed: the peer sees EOF, later calls fail at once.
	peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := peer.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("peer Read = %v; want EOF after the stall closed the connection", err)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, stallconn.ErrStalled) {
		t.Fatalf("Write after the stall = %v", err)
	}
}

// TestSlowButMovingRead: a peer trickling a byte every quarter of the
// stall timeout, for three stall timeouts, is read to the end.
func TestSlowButMovingRead(t *testing.T) {
	const d = 600 * time.Millisecond
	c, peer := pair(t, d)
	const n = 12
	go func() {
		for i := range n {
			time.Sleep(d / 4)
			peer.Write([]byte{byte('a' + i)})
		}
		peer.Close()
	}()
	start := time.Now()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("ReadAll after %s: %v", time.Since(start), err)
	}
	if len(got) != n {
		t.Fatalf("read %q", got)
	}
	if time.Since(start) < 2*d {
		t.Fatalf("the transfer took only %s; the test proves nothing", time.Since(start))
	}
}

// TestTotalDeadlineIsNotAStall: an owner's deadline earlier than the stall
// deadline fails as a plain timeout, and the connection stays usable.
func TestTotalDeadlineIsNotAStall(t *testing.T) {
	c, peer := pair(t, 10*time.Second)
	c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	_, err := c.Read(make([]byte, 1))
	if !errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, stallconn.ErrStalled) {
		t.Fatalf("Read = %v; want a plain deadline error", err)
	}
	c.SetReadDeadline(time.Time{})
	peer.Write([]byte("ok"))
	b := make([]byte, 2)
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "ok" {
		t.Fatalf("read after the deadline: %q %v", b, err)
	}
}

// TestPause: a paused connection may stay silent; SetStep restarts
// detection with a fresh period, also for a read already blocked.
func TestPause(t *testing.T) {
	const d = 300 * time.Millisecond
	c, peer := pair(t, d)
	c.Pause()
	errc := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 1))
		errc <- err
	}()
	select {
	case err := <-errc:
		t.Fatalf("paused Read returned %v", err)
	case <-time.After(3 * d):
	}
	resumed := time.Now()
	c.SetStep("LOGOUT")
	select {
	case err := <-errc:
		var se *stallconn.Error
		if !errors.As(err, &se) || se.Step != "LOGOUT" {
			t.Fatalf("Read = %v; want a stall during LOGOUT", err)
		}
		if took := time.Since(resumed); took < d {
			t.Fatalf("stalled %s after SetStep; want at least %s", took, d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no stall after SetStep")
	}
	_ = peer
}

// TestWriteStalls: a peer that reads nothing fills the buffers; the write
// fails as a stall once nothing moved for the timeout.
func TestWriteStalls(t *testing.T) {
	const d = 300 * time.Millisecond
	c, _ := pair(t, d)
	c.SetStep("sending a command")
	big := bytes.Repeat([]byte("x"), 64<<20)
	_, err := c.Write(big)
	var se *stallconn.Error
	if !errors.As(err, &se) || se.Dir != "sent" || se.Step != "sending a command" {
		t.Fatalf("Write = %v; want a stall while sending", err)
	}
}

func TestOf(t *testing.T) {
	c, _ := pair(t, time.Second)
	if stallconn.Of(c) != c {
		t.Fatal("Of(*Conn) is not the conn")
	}
	if stallconn.Of(c.NetConn()) != nil {
		t.Fatal("Of(plain conn) is not nil")
	}
}
