package replay

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/mailworker/mailworker/fetcher"
)

// DefaultFolder is the Folder of replayed messages delivered straight to
// the pipeline (SinkTarget, PrintTarget): they were not fetched from any
// folder.
const DefaultFolder = "replay"

// SinkTarget delivers each message to a fetcher.Sink (the pipeline) as if
// the server named Server had fetched it: the event id depends only on the
// server, its mailbox address and the raw bytes, so a replayed message gets
// the id a fetch of the same bytes gets, and the pipeline's ledger and
// JetStream dedupe turn a second replay into no-ops.
type SinkTarget struct {
	Sink   fetcher.Sink
	Server string // config name of the server whose naming and flags apply
	Folder string // default DefaultFolder
}

// Put delivers it and waits for the broker's acknowledgement. Sink errors
// are transient by the Sink contract, so they stop the replay.
func (t *SinkTarget) Put(ctx context.Context, it *Item) error {
	ack, err := t.Sink.Deliver(ctx, t.message(it))
	if err != nil {
		return fmt.Errorf("deliver to %s: %w", t.Server, err)
	}
	if err := ack.Wait(ctx); err != nil {
		return fmt.Errorf("deliver to %s: wait for ack: %w", t.Server, err)
	}
	return nil
}

func (t *SinkTarget) message(it *Item) *fetcher.Message {
	folder := t.Folder
	if folder == "" {
		folder = DefaultFolder
	}
	return &fetcher.Message{Server: t.Server, Folder: folder, Ref: it.Ref(), Body: it.Body}
}

// EventFunc builds the event the pipeline would publish for msg, without
// publishing it or recording it anywhere.
type EventFunc func(ctx context.Context, msg *fetcher.Message) (any, error)

// PrintTarget writes, for each message, the event a SinkTarget for the same
// server would publish, as one JSON line (dry run).
type PrintTarget struct {
	W      io.Writer
	Server string
	Folder string // default DefaultFolder
	Event  EventFunc
}

// Put writes it's event. A message the EventFunc rejects is a
// *MessageError.
func (t *PrintTarget) Put(ctx context.Context, it *Item) error {
	st := SinkTarget{Server: t.Server, Folder: t.Folder}
	ev, err := t.Event(ctx, st.message(it))
	if err != nil {
		return &MessageError{Err: err}
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // as publisher.Encode: "<" stays "<"
	if err := enc.Encode(ev); err != nil {
		return &MessageError{Err: fmt.Errorf("encode event: %w", err)}
	}
	if _, err := t.W.Write(b.Bytes()); err != nil {
		return fmt.Errorf("write event: %w", err)
	}
	return nil
}

// ErrNoFolder is returned (wrapped) by IMAPTarget when the destination
// folder does not exist (the server answered APPEND with TRYCREATE).
var ErrNoFolder = errors.New("destination folder does not exist")

// IMAPTarget APPENDs each message to Folder through an authenticated
// client (see fetcher.DialIMAP), with the message's original date as
// INTERNALDATE when known and no flags, so the fetcher sees it as new mail.
type IMAPTarget struct {
	Client *imapclient.Client
	Addr   string // host:port, for error messages
	Folder string // default "INBOX"
}

// Put appends it. A message the server refuses (NO) is a *MessageError; a
// missing folder (ErrNoFolder), a BAD or a broken connection stop the
// replay. go-imap has no context support: when ctx ends the connection is
// closed to abort the command.
func (t *IMAPTarget) Put(ctx context.Context, it *Item) error {
	folder := t.Folder
	if folder == "" {
		folder = "INBOX"
	}
	stop := context.AfterFunc(ctx, func() { t.Client.Close() })
	defer stop()
	cmd := t.Client.Append(folder, it.Body.Size(), &imap.AppendOptions{Time: it.Date})
	_, werr := io.Copy(cmd, it.Body.Open())
	cerr := cmd.Close()
	_, err := cmd.Wait()
	if err == nil {
		err = errors.Join(werr, cerr)
	}
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("imap %s: append to %s: %w", t.Addr, folder, ctx.Err())
	}
	var ie *imap.Error
	if errors.As(err, &ie) {
		if ie.Code == imap.ResponseCodeTryCreate || ie.Code == imap.ResponseCodeNonExistent {
			return fmt.Errorf("imap %s: append to %s: %w: %w", t.Addr, folder, ErrNoFolder, err)
		}
		if ie.Type == imap.StatusResponseTypeNo {
			return &MessageError{Err: fmt.Errorf("imap %s: append to %s refused: %w", t.Addr, folder, err)}
		}
	}
	return fmt.Errorf("imap %s: append to %s: %w", t.Addr, folder, err)
}
