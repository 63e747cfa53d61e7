package fetcher

import (
	"context"
	"fmt"
	"slices"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/mailworker/mailworker/spool"
)

// Test logs in and reports capabilities, the mechanism used, the folder's
// counts (STATUS, then EXAMINE: read-only), how many messages are above
// the checkpoint, and the oldest message (BODY.PEEK[]) as Sample. It changes
// nothing: no flag, no checkpoint. Sample, when not nil, holds the message
// in memory or in an unlinked spool file released when it is collected.
func (f *IMAP) Test(ctx context.Context) (*TestReport, error) {
	if f.closed {
		return nil, fmt.Errorf("imap %s: fetcher closed", f.srv.Name)
	}
	s, err := f.connect(ctx)
	if err != nil {
		return nil, err
	}
	defer f.logout(s) // Test reports what it learnt; a failed LOGOUT changes none of it
	t := f.deps.Timeouts.Command
	rep := &TestReport{
		Server: f.srv.Name, Protocol: string(f.srv.Protocol), Endpoint: f.addr(),
		AuthMethod: s.mech, Folder: f.folder, Unseen: -1, Pending: -1,
	}
	for c := range s.c.Caps() {
		rep.Capabilities = append(rep.Capabilities, string(c))
	}
	slices.Sort(rep.Capabilities)

	s.wd.arm("status "+f.folder, t)
	stat, err := s.c.Status(f.folder, &imap.StatusOptions{NumMessages: true, NumUnseen: true, UIDValidity: true, UIDNext: true}).Wait()
	if err != nil {
		return nil, s.wd.wrap(fmt.Errorf("imap %s: status %s: %w", f.addr(), f.folder, err))
	}
	if stat.NumUnseen != nil {
		rep.Unseen = int(*stat.NumUnseen)
	}
	s.wd.arm("examine "+f.folder, t)
	sel, err := s.c.Select(f.folder, &imap.SelectOptions{ReadOnly: true}).Wait()
	if err != nil {
		return nil, s.wd.wrap(fmt.Errorf("imap %s: examine %s: %w", f.addr(), f.folder, err))
	}
	rep.Messages = int(sel.NumMessages)
	rep.UIDValidity = sel.UIDValidity
	rep.UIDNext = uint32(sel.UIDNext)

	if f.deps.Checkpoints != nil {
		cp, err := f.deps.Checkpoints.Get(ctx, f.srv.Name, f.folder)
		if err != nil {
			return nil, err
		}
		last := cp.LastUID
		if cp.UIDValidity != sel.UIDValidity {
			last = 0
		}
		rep.Pending = 0
		if sel.NumMessages > 0 {
			var set imap.UIDSet
			set.AddRange(imap.UID(last+1), 0)
			s.wd.arm("uid search "+f.folder, t)
			data, err := s.c.UIDSearch(&imap.SearchCriteria{UID: []imap.UIDSet{set}}, nil).Wait()
			if err != nil {
				return nil, s.wd.wrap(fmt.Errorf("imap %s: uid search %s: %w", f.addr(), f.folder, err))
			}
			for _, u := range data.AllUIDs() {
				if uint32(u) > last {
					rep.Pending++
				}
			}
		}
	}

	if sel.NumMessages > 0 {
		s.wd.arm("fetch sample", t)
		cmd := s.c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{{Peek: true}}})
		var uid imap.UID
		var sample *spool.Spool
		for m := cmd.Next(); m != nil; m = cmd.Next() {
			for it := m.Next(); it != nil; it = m.Next() {
				switch it := it.(type) {
				case imapclient.FetchItemDataUID:
					uid = it.UID
				case imapclient.FetchItemDataBodySection:
					if it.Literal == nil || sample != nil || m.SeqNum != 1 {
						continue
					}
					s.wd.arm("fetch sample body", f.deps.Timeouts.Literal)
					sp, err := spool.ReadFrom(it.Literal, f.deps.SpoolDir, 0)
					if err != nil {
						return nil, s.wd.wrap(fmt.Errorf("imap %s: fetch sample from %s: %w", f.addr(), f.folder, err))
					}
					sample = sp
				}
			}
		}
		if err := cmd.Close(); err != nil {
			closeIMAPSpool(f.log, sample)
			return nil, s.wd.wrap(fmt.Errorf("imap %s: fetch sample from %s: %w", f.addr(), f.folder, err))
		}
		if sample != nil {
			rep.Sample = sample.Open()
			rep.SampleRef = fmt.Sprintf("imap:%d:%d", sel.UIDValidity, uid)
		}
	}
	return rep, nil
}
