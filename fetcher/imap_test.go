package fetcher

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/mailworker/mailworker/config"
	"github.com/mailworker/mailworker/imaptest"
)

func TestIMAPFetchNewMailOnly(t *testing.T) {
	fx := newIMAPFixture(t, imaptest.MemOptions{})
	ctx := ctxT(t)
	for i := 1; i <= 3; i++ {
		var flags []imap.Flag
		if i == 2 {
			flags = []imap.Flag{imap.FlagSeen} // read by a human already: still new to us
		}
		fx.mem.Append(t, "alice", "INBOX", testMsg(i, 0), flags...)
	}
	im := fx.fetcher(t)
	sink := &recSink{}
	st, err := im.Fetch(ctx, sink)
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	if got := sink.uids(); !slices.Equal(got, []uint32{1, 2, 3}) {
		t.Fatalf("delivered UIDs %v, want [1 2 3]", got)
	}
	if st.Seen != 3 || st.Delivered != 3 || st.More || st.Bytes == 0 {
		t.Fatalf("Stats = %+v, want Seen 3, Delivered 3", st)
	}
	validity := fx.mem.UIDValidity(t, "alice", "INBOX")
	for i, m := range sink.got {
		if !bytes.Equal(m.Body, testMsg(i+1, 0)) {
			t.Errorf("uid %d: body differs", m.UID)
		}
		if want := fmt.Sprintf("imap:%d:%d", validity, m.UID); m.Ref != want {
			t.Errorf("Ref = %q, want %q", m.Ref, want)
		}
		if m.Received.IsZero() {
			t.Errorf("uid %d: Received not set", m.UID)
		}
	}
	if cp := fx.checkpoint(t); cp.LastUID != 3 || cp.UIDValidity != validity {
		t.Fatalf("checkpoint %+v, want last 3 validity %d", cp, validity)
	}
	for _, m := range fx.mem.Messages(t, "alice", "INBOX") {
		if !m.Has(imap.FlagSeen) {
			t.Errorf("uid %d not \\Seen after mark_seen", m.UID)
		}
	}

	// Only mail above the checkpoint comes next, whatever its flags.
	fx.mem.Append(t, "alice", "INBOX", testMsg(4, 0), imap.FlagSeen)
	fx.mem.Append(t, "alice", "INBOX", testMsg(5, 0))
	sink.reset()
	if _, err := im.Fetch(ctx, sink); err != nil {
		t.Fatal(err)
	}
	if got := sink.uids(); !slices.Equal(got, []uint32{4, 5}) {
		t.Fatalf("second Fetch delivered %v, want [4 5]", got)
	}
	sink.reset()
	st, err = im.Fetch(ctx, sink)
	if err != nil || len(sink.got) != 0 || st.Seen != 0 {
		t.Fatalf("third Fetch = %+v, %v, delivered %v; want nothing", st, err, sink.uids())
	}
}

func TestIMAPUIDValidityReset(t *testing.T) {
	fx := newIMAPFixture(t, imaptest.MemOptions{})
	ctx := ctxT(t)
	fx.mem.Append(t, "alice", "INBOX", testMsg(1, 0))
	fx.mem.Append(t, "alice", "INBOX", testMsg(2, 0))
	im := fx.fetcher(t)
	sink := &recSink{}
	if _, err := im.Fetch(ctx, sink); err != nil {
		t.Fatal(err)
	}
	old := fx.checkpoint(t)
	fx.mem.ResetUIDValidity(t, "alice", "INBOX")
	nv := fx.mem.UIDValidity(t, "alice", "INBOX")
	if nv == old.UIDValidity {
		t.Fatal("test setup: UIDVALIDITY did not change")
	}
	sink.reset()
	if _, err := im.Fetch(ctx, sink); err != nil {
		t.Fatal(err)
	}
	// The same bytes reach the sink again; the pipeline's ledger drops them.
	if len(sink.got) != 2 || !bytes.Equal(sink.got[0].Body, testMsg(1, 0)) || !bytes.Equal(sink.got[1].Body, testMsg(2, 0)) {
		t.Fatalf("after UIDVALIDITY reset got %d messages, want the same 2 again", len(sink.got))
	}
	if sink.got[0].UIDValidity != nv {
		t.Fatalf("message UIDValidity %d, want %d", sink.got[0].UIDValidity, nv)
	}
	if cp := fx.checkpoint(t); cp.UIDValidity != nv || cp.LastUID != 2 {
		t.Fatalf("checkpoint %+v, want validity %d last 2", cp, nv)
	}
	if !strings.Contains(fx.logs.String(), "UIDVALIDITY changed") {
		t.Error("UIDVALIDITY change not logged")
	}
}

func TestIMAPFailedAckStopsRun(t *testing.T) {
	fx := newIMAPFixture(t, imaptest.MemOptions{})
	ctx := ctxT(t)
	for i := 1; i <= 5; i++ {
		fx.mem.Append(t, "alice", "INBOX", testMsg(i, 0))
	}
	im := fx.fetcher(t)
	errBroker := errors.New("broker unavailable")
	sink := &recSink{failAck: map[uint32]error{3: errBroker}}
	st, err := im.Fetch(ctx, sink)
	if !errors.Is(err, errBroker) {
		t.Fatalf("Fetch error = %v, want the ack error", err)
	}
	if !strings.Contains(err.Error(), "uid 3") || !strings.Contains(err.Error(), "INBOX") {
		t.Errorf("error %q does not name folder and uid", err)
	}
	if st.Delivered != 2 {
		t.Errorf("Delivered = %d, want 2", st.Delivered)
	}
	if cp := fx.checkpoint(t); cp.LastUID != 2 {
		t.Fatalf("checkpoint last %d, want 2 (the acked prefix)", cp.LastUID)
	}
	for _, m := range fx.mem.Messages(t, "alice", "INBOX") {
		if want := m.UID <= 2; m.Has(imap.FlagSeen) != want {
			t.Errorf("uid %d \\Seen = %v, want %v", m.UID, !want, want)
		}
	}
	// The next run retries from the checkpoint.
	sink2 := &recSink{}
	if _, err := im.Fetch(ctx, sink2); err != nil {
		t.Fatal(err)
	}
	if got := sink2.uids(); !slices.Equal(got, []uint32{3, 4, 5}) {
		t.Fatalf("retry delivered %v, want [3 4 5]", got)
	}

	// A Deliver error stops delivery at once, also without marking.
	fx.mem.Append(t, "alice", "INBOX", testMsg(6, 0))
	fx.mem.Append(t, "alice", "INBOX", testMsg(7, 0))
	sink3 := &recSink{failDel: map[uint32]error{6: errBroker}}
	if _, err := im.Fetch(ctx, sink3); !errors.Is(err, errBroker) {
		t.Fatalf("Fetch = %v, want deliver error", err)
	}
	if len(sink3.got) != 0 {
		t.Fatalf("delivered %v after a Deliver error", sink3.uids())
	}
	if cp := fx.checkpoint(t); cp.LastUID != 5 {
		t.Fatalf("checkpoint %d, want 5", cp.LastUID)
	}
}

func TestIMAPAfterFetch(t *testing.T) {
	rev1 := imap.CapSet{imap.CapIMAP4rev1: {}}
	rev1UIDPlus := imap.CapSet{imap.CapIMAP4rev1: {}, imap.CapUIDPlus: {}}
	type want struct {
		inbox     int  // messages left in INBOX
		seen      bool // INBOX messages \Seen
		deleted   bool // INBOX messages \Deleted
		processed int  // messages in Processed
	}
	tests := []struct {
		name  string
		after string
		caps  imap.CapSet
		want  want
	}{
		{"mark_seen", "mark_seen", nil, want{inbox: 2, seen: true}},
		{"none", "none", nil, want{inbox: 2}},
		{"move with MOVE", "move:Processed", nil, want{processed: 2}},
		{"move without MOVE, with UIDPLUS", "move:Processed", rev1UIDPlus, want{processed: 2}},
		{"move without MOVE and UIDPLUS", "move:Processed", rev1, want{inbox: 2, deleted: true, processed: 2}},
		{"delete", "delete", nil, want{}},
		{"delete without UIDPLUS", "delete", rev1, want{inbox: 2, deleted: true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fx := newIMAPFixture(t, imaptest.MemOptions{Caps: tc.caps})
			ctx := ctxT(t)
			fx.mem.CreateFolder(t, "alice", "Processed")
			// Another client's \Deleted mail, below the checkpoint, must
			// survive: no bare EXPUNGE.
			other := fx.mem.Append(t, "alice", "INBOX", testMsg(99, 0), imap.FlagDeleted)
			if err := fx.cps.Put(ctx, "test", "INBOX", Checkpoint{UIDValidity: fx.mem.UIDValidity(t, "alice", "INBOX"), LastUID: uint32(other)}); err != nil {
				t.Fatal(err)
			}
			fx.mem.Append(t, "alice", "INBOX", testMsg(1, 0))
			fx.mem.Append(t, "alice", "INBOX", testMsg(2, 0))
			var err error
			fx.srv.AfterFetch, err = config.ParseAfterFetch(tc.after)
			if err != nil {
				t.Fatal(err)
			}
			sink := &recSink{}
			if _, err := fx.fetcher(t).Fetch(ctx, sink); err != nil {
				t.Fatalf("Fetch: %v", err)
			}
			if len(sink.got) != 2 {
				t.Fatalf("delivered %d, want 2", len(sink.got))
			}
			inbox := fx.mem.Messages(t, "alice", "INBOX")
			if len(inbox) != tc.want.inbox+1 || inbox[0].UID != other || !inbox[0].Has(imap.FlagDeleted) {
				t.Fatalf("INBOX has %d messages, want %d plus the other client's \\Deleted one", len(inbox), tc.want.inbox)
			}
			for _, m := range inbox[1:] {
				if m.Has(imap.FlagSeen) != tc.want.seen || m.Has(imap.FlagDeleted) != tc.want.deleted {
					t.Errorf("INBOX uid %d flags %v, want seen=%v deleted=%v", m.UID, m.Flags, tc.want.seen, tc.want.deleted)
				}
			}
			proc := fx.mem.Messages(t, "alice", "Processed")
			if len(proc) != tc.want.processed {
				t.Fatalf("Processed has %d messages, want %d", len(proc), tc.want.processed)
			}
			if tc.want.processed > 0 && !bytes.Equal(proc[0].Body, testMsg(1, 0)) {
				t.Errorf("Processed holds other bytes than the moved message")
			}
			if cp := fx.checkpoint(t); cp.LastUID != 3 {
				t.Errorf("checkpoint %d, want 3", cp.LastUID)
			}
		})
	}

	t.Run("move to missing folder", func(t *testing.T) {
		for _, caps := range []imap.CapSet{nil, rev1UIDPlus} {
			fx := newIMAPFixture(t, imaptest.MemOptions{Caps: caps})
			ctx := ctxT(t)
			fx.mem.Append(t, "alice", "INBOX", testMsg(1, 0))
			fx.srv.AfterFetch = config.AfterFetch{Action: config.ActionMove, Folder: "Nowhere"}
			_, err := fx.fetcher(t).Fetch(ctx, &recSink{})
			if !errors.Is(err, ErrNoFolder) || !strings.Contains(err.Error(), `"Nowhere"`) {
				t.Fatalf("Fetch = %v, want ErrNoFolder naming the folder", err)
			}
			inbox := fx.mem.Messages(t, "alice", "INBOX")
			if len(inbox) != 1 || inbox[0].Has(imap.FlagDeleted) {
				t.Fatalf("INBOX after failed move: %+v; the message must stay untouched", inbox)
			}
			if cp := fx.checkpoint(t); cp.LastUID != 0 {
				t.Fatalf("checkpoint advanced to %d despite the failed move", cp.LastUID)
			}
		}
	})
}

func TestIMAPMaxPerFetch(t *testing.T) {
	fx := newIMAPFixture(t, imaptest.MemOptions{})
	ctx := ctxT(t)
	for i := 1; i <= 5; i++ {
		fx.mem.Append(t, "alice", "INBOX", testMsg(i, 0))
	}
	fx.srv.MaxPerFetch = 2
	im := fx.fetcher(t)
	var all []uint32
	for run, want := range []Stats{{Seen: 5, Delivered: 2, More: true}, {Seen: 3, Delivered: 2, More: true}, {Seen: 1, Delivered: 1}} {
		sink := &recSink{}
		st, err := im.Fetch(ctx, sink)
		if err != nil {
			t.Fatal(err)
		}
		st.Bytes = 0
		if st != want {
			t.Fatalf("run %d: Stats %+v, want %+v", run, st, want)
		}
		all = append(all, sink.uids()...)
	}
	if !slices.Equal(all, []uint32{1, 2, 3, 4, 5}) {
		t.Fatalf("delivered %v over three runs", all)
	}
}

func TestIMAPLargeMessageSpooled(t *testing.T) {
	fx := newIMAPFixture(t, imaptest.MemOptions{})
	ctx := ctxT(t)
	big := testMsg(1, 6<<20)
	fx.mem.Append(t, "alice", "INBOX", big)
	fx.mem.Append(t, "alice", "INBOX", testMsg(2, 0))
	sink := &recSink{}
	if _, err := fx.fetcher(t).Fetch(ctx, sink); err != nil {
		t.Fatal(err)
	}
	if len(sink.got) != 2 || !bytes.Equal(sink.got[0].Body, big) {
		t.Fatalf("large message not delivered intact")
	}
	if !sink.got[0].InFile || sink.got[1].InFile {
		t.Fatalf("spooled to file: large %v, small %v; want true, false", sink.got[0].InFile, sink.got[1].InFile)
	}
}

func TestIMAPBatches(t *testing.T) {
	var uids []imap.UID
	sizes := map[imap.UID]int64{}
	for u := imap.UID(1); u <= 450; u++ {
		uids = append(uids, u)
		sizes[u] = 1000
	}
	sizes[10] = 40 << 20 // alone in its batch
	got := imapBatches(uids, sizes)
	var lens []int
	for _, b := range got {
		lens = append(lens, len(b))
	}
	if !slices.Equal(lens, []int{9, 1, 200, 200, 40}) {
		t.Fatalf("batch sizes %v", lens)
	}
}

func TestIMAPTestConnection(t *testing.T) {
	fx := newIMAPFixture(t, imaptest.MemOptions{})
	ctx := ctxT(t)
	fx.mem.Append(t, "alice", "INBOX", testMsg(1, 0))
	fx.mem.Append(t, "alice", "INBOX", testMsg(2, 0), imap.FlagSeen)
	fx.mem.Append(t, "alice", "INBOX", testMsg(3, 0))
	validity := fx.mem.UIDValidity(t, "alice", "INBOX")
	if err := fx.cps.Put(ctx, "test", "INBOX", Checkpoint{UIDValidity: validity, LastUID: 1}); err != nil {
		t.Fatal(err)
	}
	before := fx.mem.Messages(t, "alice", "INBOX")
	rep, err := fx.fetcher(t).Test(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Messages != 3 || rep.Unseen != 2 || rep.Pending != 2 || rep.UIDValidity != validity || rep.UIDNext != 4 || rep.AuthMethod != "PLAIN" {
		t.Fatalf("report %+v", rep)
	}
	if !slices.Contains(rep.Capabilities, "IMAP4rev2") {
		t.Errorf("capabilities %v", rep.Capabilities)
	}
	sample, err := io.ReadAll(rep.Sample)
	if err != nil || !bytes.Equal(sample, testMsg(1, 0)) || rep.SampleRef != fmt.Sprintf("imap:%d:1", validity) {
		t.Fatalf("sample %q (%s), %v; want the oldest message", sample, rep.SampleRef, err)
	}
	after := fx.mem.Messages(t, "alice", "INBOX")
	for i := range before {
		if !slices.Equal(before[i].Flags, after[i].Flags) {
			t.Errorf("uid %d flags changed by Test: %v -> %v", before[i].UID, before[i].Flags, after[i].Flags)
		}
	}
	if cp := fx.checkpoint(t); cp.LastUID != 1 {
		t.Errorf("checkpoint changed by Test: %+v", cp)
	}
}

func TestIMAPStartTLS(t *testing.T) {
	fx := newIMAPFixture(t, imaptest.MemOptions{StartTLS: true})
	fx.srv.Protocol = config.ProtocolIMAP
	fx.srv.Port = fx.mem.StartTLSPort()
	fx.mem.Append(t, "alice", "INBOX", testMsg(1, 0))
	sink := &recSink{}
	if _, err := fx.fetcher(t).Fetch(ctxT(t), sink); err != nil {
		t.Fatal(err)
	}
	if len(sink.got) != 1 {
		t.Fatalf("delivered %d over STARTTLS", len(sink.got))
	}
}

func TestIMAPTLSVerified(t *testing.T) {
	fx := newIMAPFixture(t, imaptest.MemOptions{})
	fx.srv.TLS.CAFile = "" // system roots do not trust the test certificate
	_, err := fx.fetcher(t).Fetch(ctxT(t), &recSink{})
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("Fetch with an untrusted certificate = %v, want a certificate error", err)
	}
}

func TestIMAPWrongPassword(t *testing.T) {
	fx := newIMAPFixture(t, imaptest.MemOptions{})
	fx.creds.password = "wrong"
	_, err := fx.fetcher(t).Fetch(ctxT(t), &recSink{})
	if !errors.Is(err, ErrAuth) {
		t.Fatalf("Fetch = %v, want ErrAuth", err)
	}
	if strings.Contains(err.Error(), "wrong") {
		t.Fatalf("error reveals the password: %v", err)
	}
}

func TestDialIMAP(t *testing.T) {
	fx := newIMAPFixture(t, imaptest.MemOptions{})
	c, err := DialIMAP(ctxT(t), fx.srv, fx.deps)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	raw := testMsg(7, 0)
	cmd := c.Append("INBOX", int64(len(raw)), nil)
	if _, err := cmd.Write(raw); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	if msgs := fx.mem.Messages(t, "alice", "INBOX"); len(msgs) != 1 || !bytes.Equal(msgs[0].Body, raw) {
		t.Fatalf("APPEND through DialIMAP: %d messages", len(msgs))
	}
}

var _ = context.Background

// TestIMAPSpoolFailureEndsRun: when a body cannot be spooled (here the
// spool directory is missing) the run fails promptly with the reason,
// delivers nothing after it and checkpoints nothing; it used to hang in
// go-imap's Close, whose reader waited for us to consume the stream.
func TestIMAPSpoolFailureEndsRun(t *testing.T) {
	fx := newIMAPFixture(t, imaptest.MemOptions{})
	fx.deps.SpoolDir = filepath.Join(t.TempDir(), "missing")
	fx.mem.Append(t, "alice", "INBOX", testMsg(1, 0))
	fx.mem.Append(t, "alice", "INBOX", testMsg(2, 6<<20))
	fx.mem.Append(t, "alice", "INBOX", testMsg(3, 0))
	sink := &recSink{}
	done := make(chan error, 1)
	go func() {
		_, err := fx.fetcher(t).Fetch(ctxT(t), sink)
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "spool") {
			t.Fatalf("Fetch = %v; want a spool error", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Fetch hung after a spool failure")
	}
	if cp := fx.checkpoint(t); cp.LastUID > 1 {
		t.Fatalf("checkpoint advanced to %d past the message that failed", cp.LastUID)
	}
}
