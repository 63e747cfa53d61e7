package fetcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/mailworker/mailworker/config"
	"github.com/mailworker/mailworker/spool"
	"github.com/mailworker/mailworker/stallconn"
)

// Batch limits: one UID FETCH command asks for at most this many messages
// and, by RFC822.SIZE, about this many bytes (a single larger message is
// fetched alone). Bodies are streamed into spools, so the byte bound limits
// what is in flight to the Sink, not the heap.
const (
	maxBatchBytes = 32 << 20
	maxBatchCount = 200
)

// DefaultMaxPerFetch is used when max_per_fetch is 0.
const DefaultMaxPerFetch = 500

// IMAP fetches one folder of an IMAP server (RFC 9051 / RFC 3501) with
// go-imap v2. It connects for each Fetch or Test and keeps no connection in
// between. What is new is decided by the checkpoint (UIDVALIDITY + highest
// acknowledged UID), never by \Seen. It is used by one goroutine at a time.
type IMAP struct {
	srv    config.Server
	folder string
	max    int
	after  config.AfterFetch
	deps   Deps
	log    *slog.Logger

	warnedDeleted bool // the "no UIDPLUS" warning was logged
	closed        bool
}

var _ Fetcher = (*IMAP)(nil)

// NewIMAP returns the fetcher for an imaps or imap server. It does no I/O.
func NewIMAP(srv config.Server, deps Deps) (*IMAP, error) {
	deps, err := deps.withDefaults(srv)
	if err != nil {
		return nil, err
	}
	if srv.Protocol != config.ProtocolIMAPS && srv.Protocol != config.ProtocolIMAP {
		return nil, fmt.Errorf("fetcher %s: protocol %q is not imap", srv.Name, srv.Protocol)
	}
	if srv.Host == "" {
		return nil, fmt.Errorf("fetcher %s: no host", srv.Name)
	}
	f := &IMAP{srv: srv, folder: srv.Folder, max: srv.MaxPerFetch, after: srv.AfterFetch, deps: deps}
	if f.folder == "" {
		f.folder = "INBOX"
	}
	if f.max <= 0 {
		f.max = DefaultMaxPerFetch
	}
	if f.after.Action == "" {
		f.after.Action = config.ActionMarkSeen
	}
	f.log = serverLogger(deps.Logger, srv)
	return f, nil
}

// Close ends the fetcher. IMAP keeps no connection between runs, so there is
// nothing to release; Fetch and Test fail afterwards.
func (f *IMAP) Close() error {
	f.closed = true
	return nil
}

// Fetch delivers the folder's messages above the checkpoint to sink, at most
// max_per_fetch, in UID order; applies after_fetch to the longest prefix of
// acknowledged messages and then advances the checkpoint to it. A lost
// connection is retried (Deps.Backoff) from the new checkpoint; an ack
// failure, an authentication failure or an after_fetch failure ends the run
// with the error, and the next run starts again at the checkpoint.
func (f *IMAP) Fetch(ctx context.Context, sink Sink) (Stats, error) {
	var st Stats
	if f.closed {
		return st, fmt.Errorf("imap %s: fetcher closed", f.srv.Name)
	}
	if f.deps.Checkpoints == nil {
		return st, fmt.Errorf("imap %s: no checkpoint store", f.srv.Name)
	}
	for attempt := 1; ; attempt++ {
		retry, err := f.fetchOnce(ctx, sink, &st)
		if err == nil {
			return st, nil
		}
		if !retry || ctx.Err() != nil || attempt >= f.deps.Backoff.Attempts {
			return st, err
		}
		f.log.WarnContext(ctx, "imap connection lost, reconnecting", "attempt", attempt+1, "err", err)
		if werr := f.deps.Backoff.wait(ctx, attempt); werr != nil {
			return st, err
		}
	}
}

// imapPending is a delivered message whose ack is outstanding.
type imapPending struct {
	msg *Message
	ack Ack
}

// fetchOnce is one connection's worth of Fetch. retry reports whether the
// error was a lost connection after login (worth another attempt).
func (f *IMAP) fetchOnce(ctx context.Context, sink Sink, st *Stats) (retry bool, err error) {
	cp, err := f.deps.Checkpoints.Get(ctx, f.srv.Name, f.folder)
	if err != nil {
		return false, err
	}
	s, err := f.connect(ctx)
	if err != nil {
		return false, err
	}
	defer func() {
		if lerr := f.logout(s); lerr != nil && err == nil {
			err = lerr
		}
	}()
	connLost := func(err error) (bool, error) { return imapLost(s, err) }
	t := f.deps.Timeouts

	s.wd.arm("select "+f.folder, t.Command)
	sel, err := s.c.Select(f.folder, nil).Wait()
	if err != nil {
		return connLost(fmt.Errorf("imap %s: select %s: %w", f.addr(), f.folder, err))
	}
	last := cp.LastUID
	if cp.UIDValidity != 0 && cp.UIDValidity != sel.UIDValidity {
		f.log.WarnContext(ctx, "imap UIDVALIDITY changed, fetching the folder again from the start (the pipeline drops what it already published)",
			"old_uidvalidity", cp.UIDValidity, "uidvalidity", sel.UIDValidity, "old_last_uid", cp.LastUID)
		last = 0
	}

	var uids []imap.UID
	if sel.NumMessages > 0 {
		s.wd.arm("uid search "+f.folder, t.Command)
		var set imap.UIDSet
		set.AddRange(imap.UID(last+1), 0)
		data, err := s.c.UIDSearch(&imap.SearchCriteria{UID: []imap.UIDSet{set}}, nil).Wait()
		if err != nil {
			return connLost(fmt.Errorf("imap %s: uid search %s above %d: %w", f.addr(), f.folder, last, err))
		}
		// "n:*" always matches the highest UID, even below n (RFC 9051 §6.4.4).
		for _, u := range data.AllUIDs() {
			if uint32(u) > last {
				uids = append(uids, u)
			}
		}
		slices.Sort(uids)
	}
	if st.Seen == 0 && st.Delivered == 0 { // the first attempt that got this far
		st.Seen = len(uids)
	}
	if remaining := f.max - st.Delivered; len(uids) > remaining {
		uids = uids[:max(remaining, 0)]
		st.More = true
	}
	if len(uids) == 0 {
		if cp.UIDValidity != sel.UIDValidity {
			// remember the new UIDVALIDITY even when nothing is there yet
			if err := f.deps.Checkpoints.Put(ctx, f.srv.Name, f.folder, Checkpoint{UIDValidity: sel.UIDValidity, LastUID: last}); err != nil {
				return false, err
			}
		}
		return false, nil
	}

	sizes, err := f.sizes(s, uids)
	if err != nil {
		return connLost(err)
	}
	for _, b := range imapBatches(uids, sizes) {
		retry, err := f.fetchBatch(ctx, s, sink, sel.UIDValidity, b, st)
		if err != nil {
			return retry, err
		}
	}
	return false, nil
}

// imapLost classifies err from session s: retry is true when the connection is
// gone (closed by the server, the network or the watchdog on a timeout),
// but not when ctx ended it.
func imapLost(s *imapSession, err error) (retry bool, _ error) {
	err = s.wd.wrap(err)
	if errors.Is(err, stallconn.ErrStalled) {
		return false, err // the run ends; the next one starts on a fresh connection
	}
	var opErr *net.OpError
	if errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, ErrTimeout) || errors.As(err, &opErr) {
		// the reader goroutine closes the socket before it reports Closed
		return !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded), err
	}
	select {
	case <-s.c.Closed():
		return true, err
	default:
		return false, err
	}
}

// logout ends a session politely, best effort within logoutTimeout (and
// the stall timeout), then closes the socket. A LOGOUT that stalled or
// timed out is returned: the connection to the server is broken, and the
// run reports it. Other LOGOUT failures (a server that already hung up)
// are only logged.
func (f *IMAP) logout(s *imapSession) error {
	err := goodbye(s.wd, "LOGOUT", func() error { return s.c.Logout().Wait() }, f.log)
	if cerr := s.close(); cerr != nil {
		f.log.Debug("imap close", "err", cerr)
	}
	if err != nil {
		return fmt.Errorf("imap %s: logout: %w", f.addr(), err)
	}
	return nil
}

// sizes learns RFC822.SIZE of uids with one cheap FETCH.
func (f *IMAP) sizes(s *imapSession, uids []imap.UID) (map[imap.UID]int64, error) {
	s.wd.arm("fetch sizes", f.deps.Timeouts.Command)
	cmd := s.c.Fetch(imap.UIDSetNum(uids...), &imap.FetchOptions{UID: true, RFC822Size: true})
	sizes := make(map[imap.UID]int64, len(uids))
	for {
		m := cmd.Next()
		if m == nil {
			break
		}
		var uid imap.UID
		var size int64
		for it := m.Next(); it != nil; it = m.Next() {
			switch it := it.(type) {
			case imapclient.FetchItemDataUID:
				uid = it.UID
			case imapclient.FetchItemDataRFC822Size:
				size = it.Size
			}
		}
		if uid != 0 {
			sizes[uid] = size
		}
		s.wd.arm("fetch sizes", f.deps.Timeouts.Command)
	}
	if err := cmd.Close(); err != nil {
		return nil, fmt.Errorf("imap %s: fetch sizes in %s: %w", f.addr(), f.folder, err)
	}
	return sizes, nil
}

// batches splits uids (sorted) into runs of at most maxBatchCount messages
// and about maxBatchBytes.
func imapBatches(uids []imap.UID, sizes map[imap.UID]int64) [][]imap.UID {
	var out [][]imap.UID
	var cur []imap.UID
	var bytes int64
	for _, u := range uids {
		sz := sizes[u]
		if len(cur) > 0 && (len(cur) >= maxBatchCount || bytes+sz > maxBatchBytes) {
			out = append(out, cur)
			cur, bytes = nil, 0
		}
		cur = append(cur, u)
		bytes += sz
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}

// fetchBatch streams one UID FETCH, delivering each message as its body
// arrives, then waits on the acks in UID order and completes the acked
// prefix (after_fetch, then checkpoint).
func (f *IMAP) fetchBatch(ctx context.Context, s *imapSession, sink Sink, validity uint32, batch []imap.UID, st *Stats) (retry bool, err error) {
	t := f.deps.Timeouts
	want := make(map[imap.UID]bool, len(batch))
	for _, u := range batch {
		want[u] = true
	}
	cmd := s.c.Fetch(imap.UIDSetNum(batch...), &imap.FetchOptions{
		UID: true, RFC822Size: true, InternalDate: true,
		BodySection: []*imap.FetchItemBodySection{{Peek: true}},
	})
	var pend []imapPending
	var deliverErr, readErr error
	copyBuf := make([]byte, 64<<10)
	for readErr == nil {
		s.wd.arm("uid fetch "+f.folder, t.Command)
		m := cmd.Next()
		if m == nil {
			break
		}
		msg := &Message{Server: f.srv.Name, Folder: f.folder, UIDValidity: validity}
		for it := m.Next(); it != nil; it = m.Next() {
			switch it := it.(type) {
			case imapclient.FetchItemDataUID:
				msg.UID = uint32(it.UID)
			case imapclient.FetchItemDataInternalDate:
				msg.Received = it.Time
			case imapclient.FetchItemDataBodySection:
				if it.Literal == nil || msg.Body != nil {
					continue
				}
				// The UID may come after the body: spool first, decide later.
				s.wd.arm(fmt.Sprintf("uid fetch %s body of message %d", f.folder, m.SeqNum), t.Literal)
				sp := spool.New(f.deps.SpoolDir, 0)
				sp.Grow(it.Literal.Size())
				_, err := io.CopyBuffer(sp, it.Literal, copyBuf)
				if err != nil {
					closeIMAPSpool(f.log, sp)
					readErr = fmt.Errorf("imap %s: uid fetch %s body of message %d: %w", f.addr(), f.folder, m.SeqNum, err)
					break
				}
				msg.Body = sp
			}
			if readErr != nil {
				break
			}
		}
		if readErr != nil {
			closeIMAPSpool(f.log, msg.Body)
			break
		}
		uid := imap.UID(msg.UID)
		if msg.Body == nil || !want[uid] {
			// flag updates and other unsolicited FETCH responses
			closeIMAPSpool(f.log, msg.Body)
			continue
		}
		want[uid] = false // a duplicate response is not delivered twice
		if deliverErr != nil {
			closeIMAPSpool(f.log, msg.Body)
			continue // drain the command; nothing more is delivered
		}
		msg.Ref = fmt.Sprintf("imap:%d:%d", validity, msg.UID)
		s.wd.pause() // the Sink's time is not the server's silence
		ack, err := sink.Deliver(ctx, msg)
		if err != nil {
			deliverErr = fmt.Errorf("imap %s: deliver %s uid %d: %w", f.addr(), f.folder, msg.UID, err)
			f.debugMsg(ctx, msg, "deliver failed")
			closeIMAPSpool(f.log, msg.Body)
			continue
		}
		f.debugMsg(ctx, msg, "delivered")
		pend = append(pend, imapPending{msg: msg, ack: ack})
	}
	var fetchErr error
	if readErr != nil {
		fetchErr = readErr
		// Do not read the rest. go-imap's reader goroutine waits for us to
		// consume the item it handed out, and Client.Close waits for that
		// goroutine: drain the command concurrently so both can finish.
		go func() {
			for m := cmd.Next(); m != nil; m = cmd.Next() {
				for m.Next() != nil {
				}
			}
			cmd.Close()
		}()
		s.c.Close()
	} else if err := cmd.Close(); err != nil {
		fetchErr = fmt.Errorf("imap %s: uid fetch %s: %w", f.addr(), f.folder, err)
	}
	s.wd.pause() // acks are the Sink's business, bounded by ctx only

	// Wait on every ack (the Sink may use a body until its ack completes),
	// in UID order; the acked prefix ends at the first failure.
	slices.SortFunc(pend, func(a, b imapPending) int { return int(int64(a.msg.UID) - int64(b.msg.UID)) })
	prefix := 0
	var ackErr error
	for i, p := range pend {
		err := p.ack.Wait(ctx)
		switch {
		case err != nil && ackErr == nil:
			ackErr = fmt.Errorf("imap %s: ack %s uid %d: %w", f.addr(), f.folder, p.msg.UID, err)
			f.debugMsg(ctx, p.msg, "ack failed")
		case ackErr == nil:
			prefix = i + 1
			f.debugMsg(ctx, p.msg, "acked")
		}
		closeIMAPSpool(f.log, p.msg.Body)
	}
	if fetchErr != nil {
		// The connection is gone or the stream broken: after_fetch cannot run,
		// so nothing is checkpointed; the retry re-delivers (deduped).
		return imapLost(s, fetchErr)
	}
	if prefix > 0 {
		done := make([]imap.UID, prefix)
		var bytes int64
		for i, p := range pend[:prefix] {
			done[i] = imap.UID(p.msg.UID)
			bytes += p.msg.Body.Size()
		}
		if err := f.afterFetch(ctx, s, done); err != nil {
			// a lost connection is retried: the retry re-delivers these
			// messages (the Sink drops them) and applies after_fetch again
			return imapLost(s, err)
		}
		hi := uint32(done[len(done)-1])
		if err := f.deps.Checkpoints.Put(ctx, f.srv.Name, f.folder, Checkpoint{UIDValidity: validity, LastUID: hi}); err != nil {
			return false, err
		}
		st.Delivered += prefix
		st.Bytes += bytes
		if f.srv.EmailDebug {
			f.log.DebugContext(ctx, "imap checkpoint", "uidvalidity", validity, "uid", hi, "after_fetch", f.after.String(), "messages", prefix)
		}
	}
	if deliverErr != nil {
		return false, deliverErr
	}
	return false, ackErr
}

func (f *IMAP) debugMsg(ctx context.Context, m *Message, what string) {
	if !f.srv.EmailDebug {
		return
	}
	f.log.DebugContext(ctx, "imap message", "uid", m.UID, "ref", m.Ref, "size", m.Body.Size(),
		"received", m.Received.Format(time.RFC3339), "decision", what)
}

func closeIMAPSpool(log *slog.Logger, sp *spool.Spool) {
	if err := sp.Close(); err != nil {
		log.Warn("release spool", "err", err)
	}
}

// afterFetch applies the after_fetch action to uids (all acknowledged).
func (f *IMAP) afterFetch(ctx context.Context, s *imapSession, uids []imap.UID) error {
	set := imap.UIDSetNum(uids...)
	t := f.deps.Timeouts.Command
	switch f.after.Action {
	case config.ActionNone:
		return nil
	case config.ActionMarkSeen:
		s.wd.arm("store \\Seen", t)
		err := s.c.Store(set, &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagSeen}}, nil).Close()
		if err != nil {
			return s.wd.wrap(fmt.Errorf("imap %s: store \\Seen in %s uids %v: %w", f.addr(), f.folder, set, err))
		}
		return nil
	case config.ActionMove:
		dest := f.after.Folder
		if s.c.Caps().Has(imap.CapMove) {
			s.wd.arm("move", t)
			if _, err := s.c.Move(set, dest).Wait(); err != nil {
				return s.wd.wrap(fmt.Errorf("imap %s: move %s uids %v to %q: %w", f.addr(), f.folder, set, dest, imapDestErr(err)))
			}
			return nil
		}
		// No MOVE: COPY, and only once it succeeded, delete at the source.
		// (imapclient's own fallback pipelines STORE+EXPUNGE even when COPY
		// fails, which loses mail.)
		s.wd.arm("copy", t)
		if _, err := s.c.Copy(set, dest).Wait(); err != nil {
			return s.wd.wrap(fmt.Errorf("imap %s: copy %s uids %v to %q: %w", f.addr(), f.folder, set, dest, imapDestErr(err)))
		}
		return f.deleteUIDs(ctx, s, set)
	case config.ActionDelete:
		return f.deleteUIDs(ctx, s, set)
	}
	return fmt.Errorf("imap %s: unknown after_fetch %q", f.srv.Name, f.after.Action)
}

// deleteUIDs sets \Deleted on set and expunges exactly set with UID EXPUNGE
// (UIDPLUS). Without UIDPLUS it leaves the flag: a bare EXPUNGE would also
// remove other clients' \Deleted mail.
func (f *IMAP) deleteUIDs(ctx context.Context, s *imapSession, set imap.UIDSet) error {
	t := f.deps.Timeouts.Command
	s.wd.arm("store \\Deleted", t)
	err := s.c.Store(set, &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close()
	if err != nil {
		return s.wd.wrap(fmt.Errorf("imap %s: store \\Deleted in %s uids %v: %w", f.addr(), f.folder, set, err))
	}
	if !s.c.Caps().Has(imap.CapUIDPlus) {
		if !f.warnedDeleted {
			f.warnedDeleted = true
			f.log.WarnContext(ctx, "imap server lacks UIDPLUS: messages are flagged \\Deleted but not expunged (a plain EXPUNGE could remove other clients' mail)")
		}
		return nil
	}
	s.wd.arm("uid expunge", t)
	if err := s.c.UIDExpunge(set).Close(); err != nil {
		return s.wd.wrap(fmt.Errorf("imap %s: uid expunge %s uids %v: %w", f.addr(), f.folder, set, err))
	}
	return nil
}

// ErrNoFolder is returned (wrapped) when the move destination does not
// exist. mailworker does not create folders: a typo would silently file
// mail somewhere unexpected.
var ErrNoFolder = errors.New("destination folder does not exist")

func imapDestErr(err error) error {
	var ie *imap.Error
	if errors.As(err, &ie) && (ie.Code == imap.ResponseCodeTryCreate || ie.Code == imap.ResponseCodeNonExistent) {
		return fmt.Errorf("%w (create it on the server): %w", ErrNoFolder, err)
	}
	return err
}
