package worker

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/mailworker/mailworker/config"
	"github.com/mailworker/mailworker/imaptest"
	"github.com/mailworker/mailworker/publisher"
	"github.com/mailworker/mailworker/storage/storagetest"
)

// Stall scenario timing. The admin's case is a 60 s stall_timeout and a
// network that swallows every connection for 90 s. To keep the suite fast
// the test scales it down through the Go API (config files refuse a stall
// timeout under 5 s and intervals under 10 s): a 2 s stall timeout and a
// freeze of five stall timeouts, long enough for the frozen run to fail and
// for further runs to stall against unanswered connections while the
// freeze holds.
const (
	stallTimeout   = 2 * time.Second
	stallHold      = 5 * stallTimeout
	frozenInterval = 3 * time.Second
	steadyInterval = time.Second
	stallBodySize  = 128 << 10
	stallSeeded    = 10 // messages in the frozen mailbox at the start
	stallArriving  = 3  // messages arriving in each mailbox during the freeze
	// stallSlack absorbs a loaded CI machine in the "within" assertions.
	stallSlack = 8 * time.Second
)

// TestStallDovecot puts a freezing proxy (imaptest.Proxy) between the
// worker and Dovecot and freezes every open connection (no byte either
// way, never closed) mid-body, at LOGOUT and at the login greeting; for
// the hold, new connections are accepted and never answered, then they
// work again. In each case:
//   - the frozen run fails within the stall timeout plus a few seconds, with
//     a logged error naming the server, the step and the silence, and status
//     shows the failure;
//   - a second server, on the same Dovecot without the proxy, publishes mail
//     arriving during the freeze while the freeze holds;
//   - once new connections work, every remaining message of the frozen
//     mailbox (including mail that arrived meanwhile) is published within
//     one interval (plus the stall timeout of a run that started during the
//     freeze, plus slack);
//   - nothing is published twice.
func TestStallDovecot(t *testing.T) {
	for _, tc := range []struct {
		name   string
		step   string // in the error
		freeze func(p *imaptest.Proxy)
	}{
		{"mid-body", "body of message", func(p *imaptest.Proxy) {
			p.FreezeAfterServerBytes(2*stallBodySize+stallBodySize/2, stallHold) // inside the third body
		}},
		{"logout", "LOGOUT", func(p *imaptest.Proxy) { p.FreezeOnClient(" LOGOUT\r\n", stallHold) }},
		{"greeting", "greeting", func(p *imaptest.Proxy) { p.FreezeOnGreeting(stallHold) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const steadyUser = "bob"
			d := imaptest.StartDovecot(t, imaptest.DovecotOptions{Users: map[string]string{testUser: testPassword, steadyUser: testPassword}})
			var frozenMsgs, steadyMsgs [][]byte
			for i := range stallSeeded {
				frozenMsgs = append(frozenMsgs, message(i, stallBodySize))
			}
			d.SeedMaildir(testUser, "INBOX", frozenMsgs)
			for i := range 2 {
				steadyMsgs = append(steadyMsgs, message(1000+i, 4<<10))
			}
			d.SeedMaildir(steadyUser, "INBOX", steadyMsgs)

			p := d.StartProxy(t)
			frozen := imapServer("frozen", d, "mark_seen")
			frozen.Port = p.Port()
			frozen.StallTimeout = config.Duration(stallTimeout)
			frozen.FetchInterval = config.Duration(frozenInterval)
			steady := imapServer("steady", d, "mark_seen")
			steady.Username = steadyUser // default stall_timeout (60 s)
			steady.FetchInterval = config.Duration(steadyInterval)

			b := startBroker(t)
			logs := &logBuffer{}
			w := openWorker(t, testConfig(t, storagetest.Drivers[0], b.url(), frozen, steady), logs)
			defer w.Close()
			tc.freeze(p)
			if err := w.Start(); err != nil {
				t.Fatal(err)
			}
			defer w.Stop(context.Background())

			select {
			case <-p.Frozen():
			case <-time.After(time.Minute):
				t.Fatal("the proxy never froze")
			}
			frozenAt := p.FrozenAt()
			// Mail arrives in both mailboxes during the freeze.
			var arriving [][]byte
			for i := range stallArriving {
				arriving = append(arriving, message(2000+i, 4<<10))
			}
			d.SeedMaildir(testUser, "INBOX", arriving)
			frozenMsgs = append(frozenMsgs, arriving...)
			arriving = nil
			for i := range stallArriving {
				arriving = append(arriving, message(3000+i, 4<<10))
			}
			d.SeedMaildir(steadyUser, "INBOX", arriving)
			steadyMsgs = append(steadyMsgs, arriving...)

			// The frozen run fails within the stall timeout plus a few seconds.
			var failure map[string]any
			waitFor(t, stallTimeout+stallSlack, "the frozen run's stall error", func() bool {
				failure = stallRecord(logs.String(), "frozen")
				return failure != nil
			})
			took := time.Since(frozenAt)
			if took > stallTimeout+stallSlack {
				t.Fatalf("the stall was logged %s after the freeze", took)
			}
			t.Logf("stall logged %s after the freeze", took.Round(time.Millisecond))
			msg, _ := failure["err"].(string)
			t.Logf("logged: %s", msg)
			if !strings.Contains(msg, tc.step) || !strings.Contains(msg, "no byte received for") {
				t.Fatalf("logged error %q does not name the step %q and the silence", msg, tc.step)
			}
			sts, err := w.Status(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range sts {
				if s.Server == "frozen" && (s.Run == nil || !strings.Contains(s.Run.LastError, "stalled")) {
					t.Fatalf("status of the frozen server: %+v; want its last error to say stalled", s.Run)
				}
			}

			// The steady server keeps fetching while the freeze holds.
			waitFor(t, time.Until(p.ThawAt()), "the steady server's mail during the freeze", func() bool {
				return countServer(b.events(t), "steady") == len(steadyMsgs)
			})

			// Once new connections work, the rest arrives within one interval
			// (+ the stall timeout of a run caught in the freeze, + slack).
			thaw := p.ThawAt()
			time.Sleep(time.Until(thaw))
			limit := frozenInterval + stallTimeout + stallSlack
			waitFor(t, limit, "the frozen mailbox's remaining messages", func() bool {
				return countServer(b.events(t), "frozen") >= len(frozenMsgs)
			})
			t.Logf("frozen mailbox drained %s after the thaw", time.Since(thaw).Round(time.Millisecond))

			// Nothing twice: one event per message, per server.
			time.Sleep(frozenInterval) // one more run of each server publishes nothing new
			evs := b.events(t)
			ids := uniqueIDs(t, evs)
			if got, want := len(evs), len(frozenMsgs)+len(steadyMsgs); got != want || len(ids) != want {
				t.Fatalf("stream holds %d events (%d unique); want exactly %d", got, len(ids), want)
			}
			if got := countServer(evs, "frozen"); got != len(frozenMsgs) {
				t.Fatalf("%d events of the frozen server; want %d", got, len(frozenMsgs))
			}
		})
	}
}

// stallRecord returns the first "fetch failed" log record of server whose
// error says it stalled, or nil.
func stallRecord(logs, server string) map[string]any {
	for _, line := range strings.Split(logs, "\n") {
		if !strings.Contains(line, "stalled") {
			continue
		}
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) != nil {
			continue
		}
		if rec["msg"] == "fetch failed" && rec["server"] == server {
			return rec
		}
	}
	return nil
}

func countServer(evs []publisher.Event, server string) int {
	n := 0
	for _, ev := range evs {
		if ev.Server == server {
			n++
		}
	}
	return n
}
