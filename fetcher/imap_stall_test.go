package fetcher

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailworker/mailworker/imaptest"
	"github.com/mailworker/mailworker/stallconn"
)

// The stall tests put a freezing proxy (imaptest.Proxy) between the fetcher
// and the in-memory server. A short stall timeout keeps them fast; the
// freeze's hold is a multiple of it (the real-world case is a 90 s outage
// against a 60 s timeout). worker's TestStallDovecot runs the same cases
// end to end against Dovecot.
const (
	testStall = 1500 * time.Millisecond
	testHold  = 3 * testStall
)

// stallFixture is an imapFixture whose server is reached through a proxy.
func stallFixture(t *testing.T, n, size int) (*imapFixture, *imaptest.Proxy) {
	t.Helper()
	fx := newIMAPFixture(t, imaptest.MemOptions{})
	for i := 1; i <= n; i++ {
		fx.mem.Append(t, "alice", "INBOX", testMsg(i, size))
	}
	p := fx.mem.StartProxy(t)
	fx.srv.Port = p.Port()
	fx.deps.Timeouts.Stall = testStall
	return fx, p
}

// wantStall checks that err is a stall during a step containing step, and
// that it was reported within a few seconds of the stall timeout after
// frozenAt.
func wantStall(t *testing.T, err error, step string, frozenAt, failedAt time.Time) {
	t.Helper()
	var se *stallconn.Error
	if !errors.As(err, &se) {
		t.Fatalf("Fetch = %v; want a stall", err)
	}
	if !strings.Contains(se.Step, step) || se.Silent < testStall {
		t.Fatalf("stall %+v; want one during %q of at least %s", se, step, testStall)
	}
	if frozenAt.IsZero() {
		t.Fatal("the proxy never froze")
	}
	if took := failedAt.Sub(frozenAt); took > testStall+8*time.Second {
		t.Fatalf("the run failed %s after the freeze; want within the stall timeout (%s) plus a few seconds", took, testStall)
	}
	t.Logf("failed %s after the freeze: %v", failedAt.Sub(frozenAt).Round(time.Millisecond), err)
	if msg := err.Error(); !strings.Contains(msg, "no byte") || !strings.Contains(msg, step) {
		t.Fatalf("error %q names neither the silence nor the step", msg)
	}
}

// waitThaw waits until the proxy answers new connections again.
func waitThaw(t *testing.T, p *imaptest.Proxy) {
	t.Helper()
	time.Sleep(time.Until(p.ThawAt()) + 50*time.Millisecond)
}

// TestIMAPStallMidBody: the network freezes in the middle of the third
// message's body. The run fails after the stall timeout (the body's total
// limit is ten minutes) with the step and the silence and does not
// reconnect within the run; the first run after the outage delivers every
// message. (A broken stream checkpoints nothing, so messages 1 and 2 are
// delivered again; the pipeline's ledger drops them, as worker's
// TestStallDovecot shows.)
func TestIMAPStallMidBody(t *testing.T) {
	const size = 200 << 10
	fx, p := stallFixture(t, 5, size)
	p.FreezeAfterServerBytes(2*size+size/2, testHold)
	sink := &recSink{}
	_, err := fx.fetcher(t).Fetch(ctxT(t), sink)
	wantStall(t, err, "body of message", p.FrozenAt(), time.Now())
	if got := p.Accepted(); got != 1 {
		t.Fatalf("%d connections during the run; a stall must end it, not reconnect", got)
	}
	if got := sink.uids(); !slices.Equal(got, []uint32{1, 2}) {
		t.Fatalf("delivered uids %v before the freeze; want 1 and 2", got)
	}
	if cp := fx.checkpoint(t); cp.LastUID > 2 {
		t.Fatalf("checkpoint at uid %d, past the frozen message", cp.LastUID)
	}
	waitThaw(t, p)
	sink.reset()
	if _, err := fx.fetcher(t).Fetch(ctxT(t), sink); err != nil {
		t.Fatalf("Fetch after the outage: %v", err)
	}
	if got := sink.uids(); !slices.Equal(got, []uint32{1, 2, 3, 4, 5}) {
		t.Fatalf("delivered uids %v after the outage; want 1..5", got)
	}
	if cp := fx.checkpoint(t); cp.LastUID != 5 {
		t.Fatalf("checkpoint at uid %d; want 5", cp.LastUID)
	}
}

// TestIMAPStallGreeting: the network freezes right after the TLS handshake,
// before the greeting; while it holds, new connections are accepted but
// never answered (a stall in the TLS handshake); afterwards the mailbox is
// fetched.
func TestIMAPStallGreeting(t *testing.T) {
	fx, p := stallFixture(t, 3, 0)
	p.FreezeOnGreeting(5 * testStall) // long enough for a second run inside it
	sink := &recSink{}
	_, err := fx.fetcher(t).Fetch(ctxT(t), sink)
	wantStall(t, err, "greeting", p.FrozenAt(), time.Now())
	if time.Now().Before(p.ThawAt().Add(-testStall - time.Second)) {
		start := time.Now()
		_, err = fx.fetcher(t).Fetch(ctxT(t), sink)
		wantStall(t, err, "tls handshake", start, time.Now())
	} else {
		t.Log("the box is slow: no time left in the freeze for a second run")
	}
	waitThaw(t, p)
	if _, err := fx.fetcher(t).Fetch(ctxT(t), sink); err != nil {
		t.Fatalf("Fetch after the outage: %v", err)
	}
	if got := sink.uids(); !slices.Equal(got, []uint32{1, 2, 3}) {
		t.Fatalf("delivered uids %v; want 1..3 once", got)
	}
}

// TestIMAPStallLogout: the network freezes when LOGOUT is sent. Everything
// was delivered and checkpointed; the run still fails promptly, naming
// LOGOUT, and the next run finds nothing new.
func TestIMAPStallLogout(t *testing.T) {
	fx, p := stallFixture(t, 3, 0)
	p.FreezeOnClient(" LOGOUT\r\n", testHold)
	sink := &recSink{}
	st, err := fx.fetcher(t).Fetch(ctxT(t), sink)
	wantStall(t, err, "LOGOUT", p.FrozenAt(), time.Now())
	if st.Delivered != 3 || fx.checkpoint(t).LastUID != 3 {
		t.Fatalf("stats %+v, checkpoint %d; want all 3 delivered and checkpointed before LOGOUT", st, fx.checkpoint(t).LastUID)
	}
	waitThaw(t, p)
	st, err = fx.fetcher(t).Fetch(ctxT(t), sink)
	if err != nil || st.Delivered != 0 {
		t.Fatalf("Fetch after the outage = %+v, %v; want nothing new", st, err)
	}
	if got := sink.uids(); !slices.Equal(got, []uint32{1, 2, 3}) {
		t.Fatalf("delivered uids %v; want 1..3 once", got)
	}
}

// TestIMAPSlowTransferNotCut: a body trickling in small chunks, each gap
// well under the stall timeout, takes several stall timeouts in all and
// is fetched whole.
func TestIMAPSlowTransferNotCut(t *testing.T) {
	const size = 64 << 10
	fx, p := stallFixture(t, 1, size)
	p.Trickle(4<<10, testStall/4)
	sink := &recSink{}
	start := time.Now()
	if _, err := fx.fetcher(t).Fetch(ctxT(t), sink); err != nil {
		t.Fatalf("Fetch of a slow but moving transfer after %s: %v", time.Since(start), err)
	}
	if took := time.Since(start); took < 2*testStall {
		t.Fatalf("the transfer took %s, under twice the stall timeout; the test proves nothing", took)
	}
	if got := sink.uids(); !slices.Equal(got, []uint32{1}) || len(sink.got[0].Body) < size {
		t.Fatalf("delivered %v", got)
	}
}

// TestIMAPSilentStepLimitEndsRun: with the defaults a step's own limit can
// be shorter than the stall timeout (greeting 30 s, stall 60 s). A step
// that hits its limit without receiving a byte is a stall too: the run
// ends after one connection instead of reconnecting into the same silence.
func TestIMAPSilentStepLimitEndsRun(t *testing.T) {
	fx, p := stallFixture(t, 1, 0)
	fx.deps.Timeouts = Timeouts{Dial: 500 * time.Millisecond, Stall: time.Minute}
	fx.deps.Backoff = Backoff{Attempts: 3, Min: time.Millisecond, Max: time.Millisecond}
	p.FreezeOnGreeting(time.Minute)
	start := time.Now()
	_, err := fx.fetcher(t).Fetch(ctxT(t), &recSink{})
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, stallconn.ErrStalled) || !strings.Contains(err.Error(), "greeting") {
		t.Fatalf("Fetch = %v; want a greeting timeout that counts as a stall", err)
	}
	t.Logf("after %s: %v", time.Since(start).Round(time.Millisecond), err)
	if got := p.Accepted(); got != 1 {
		t.Fatalf("%d connections; a silent step must end the run, not reconnect", got)
	}
}
