//go:build linux

package stallconn_test

import (
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/mailworker/mailworker/stallconn"
)

// TestDialerKeepalive: connections from Dialer have TCP keepalive on with
// Keepalive's idle time, interval and probe count.
func TestDialerKeepalive(t *testing.T) {
	c, _ := pair(t, time.Second)
	raw, err := c.NetConn().(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var on, idle, intvl, cnt int
	var serr error
	err = raw.Control(func(fd uintptr) {
		get := func(level, opt int) int {
			v, err := syscall.GetsockoptInt(int(fd), level, opt)
			if err != nil && serr == nil {
				serr = err
			}
			return v
		}
		on = get(syscall.SOL_SOCKET, syscall.SO_KEEPALIVE)
		idle = get(syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE)
		intvl = get(syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL)
		cnt = get(syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT)
	})
	if err != nil || serr != nil {
		t.Fatal(err, serr)
	}
	k := stallconn.Keepalive
	if on == 0 || idle != int(k.Idle.Seconds()) || intvl != int(k.Interval.Seconds()) || cnt != k.Count {
		t.Fatalf("keepalive on=%d idle=%d interval=%d count=%d; want on, %v, %v, %d", on, idle, intvl, cnt, k.Idle, k.Interval, k.Count)
	}
}
