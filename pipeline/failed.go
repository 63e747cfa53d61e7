package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/mailworker/mailworker/fetcher"
	"github.com/mailworker/mailworker/parser"
	"github.com/mailworker/mailworker/publisher"
)

// FailedIDSuffix ends the id of a failed event: a failed event's id is
// EventID(server, mailbox, raw sha256) + FailedIDSuffix, so that the full
// event published by a successful Retry can carry the plain EventID (the
// id the message would have had if it had parsed at once) without being
// dropped by JetStream as a duplicate of the failed event.
const FailedIDSuffix = "-failed"

// Failed-mail statuses (pipeline_failed.status).
const (
	FailedPending = "pending" // raw kept, waiting for `mailworker failed retry`
	FailedRetried = "retried" // parsed and published by Retry
)

// Failure codes of failed events (Event.Error.Code). See docs/events.md.
const (
	CodeEmpty             = "empty"              // parser.ErrEmpty: no message at all
	CodeParseError        = "parse_error"        // any other permanent parse error
	CodeParserPanic       = "parser_panic"       // the parser panicked (a bug): recovered
	CodeTooLarge          = "too_large"          // raw message over max_message_bytes: not parsed
	CodeEventTooLarge     = "event_too_large"    // the event is over the nats max payload even with its bodies cut
	CodeDBRefused         = "db_refused"         // the database refused the message's ledger row
	CodeAttachmentRefused = "attachment_refused" // the attachment store refused an attachment
	CodeTooManyAttempts   = "too_many_attempts"  // MaxAttempts runs failed on the message
)

// WarnBodyTruncated is the warning added to an event whose html or text
// was cut to fit the nats max payload; the raw message is kept
// (Raw.Object).
const WarnBodyTruncated = "body_truncated"

// ErrNotFound is returned by Retry when the id names no pending failed mail.
var ErrNotFound = errors.New("no such pending failed mail")

// ErrUnknownServer is returned (in a RetryResult) when failed mail belongs
// to a server that is not configured (ForServer was not called for it).
var ErrUnknownServer = errors.New("server not configured")

// Failed is one unparseable message whose raw copy is kept.
type Failed struct {
	// EventID is the id the full event gets once Retry succeeds; the failed
	// event carried EventID + FailedIDSuffix.
	EventID   string    `db:"event_id" json:"event_id"`
	Server    string    `db:"server" json:"server"`
	Folder    string    `db:"folder" json:"folder"`
	SourceRef string    `db:"source_ref" json:"source_ref"`
	RawSHA256 string    `db:"raw_sha256" json:"raw_sha256"`
	RawSize   int64     `db:"raw_size" json:"raw_size"`
	RawPath   string    `db:"raw_path" json:"raw_path"` // relative to data_dir
	Error     string    `db:"error" json:"error"`
	Attempts  int       `db:"attempts" json:"attempts"`
	Status    string    `db:"status" json:"status"` // FailedPending or FailedRetried
	CreatedAt time.Time `db:"created_at" json:"created_at"`
	UpdatedAt time.Time `db:"updated_at" json:"updated_at"`
}

// failureCode maps a permanent parse error to Event.Error.Code.
func failureCode(err error) string {
	switch {
	case errors.Is(err, parser.ErrEmpty):
		return CodeEmpty
	case errors.Is(err, errPanic):
		return CodeParserPanic
	}
	return CodeParseError
}

// rawPath is the raw copy's path of failed mail, relative to the data
// directory.
func rawPath(sha string) string { return filepath.Join("failed", sha+".eml") }

// keptPath is where the raw copy of a published event that lacks part of
// its message (bodies cut, parts dropped) is kept, relative to the data
// directory.
func keptPath(sha string) string { return filepath.Join("raw", sha+".eml") }

// maxErrorText bounds a failed event's error message.
const maxErrorText = 2000

// deliverFailed quarantines h: it keeps the raw message and publishes a
// failed event with code and cause; its Ack records the failed row and
// the ledger row once acknowledged. Its errors are outages (it is not
// quarantined again).
func (s *serverSink) deliverFailed(ctx context.Context, h *handling, code string, cause error) (fetcher.Ack, error) {
	src, raw := h.src, h.raw
	rel := rawPath(raw.SHA256)
	if err := writeRawAtomic(filepath.Join(s.p.dataDir, rel), h.msg.Body.Open()); err != nil {
		return nil, fmt.Errorf("pipeline %s %s: keep raw of failed mail: %w", s.name, src.ref, err)
	}
	base := publisher.EventID(s.name, s.mailbox, raw.SHA256)
	raw.Object = rel
	ev := &publisher.Event{
		Schema:     publisher.SchemaV1,
		ID:         base + FailedIDSuffix,
		Kind:       publisher.KindFailed,
		Server:     s.name,
		Mailbox:    s.mailbox,
		Folder:     src.folder,
		Source:     src.ref,
		ReceivedAt: src.received,
		Raw:        raw,
		Error:      &publisher.Failure{Code: code, Message: sqlText(cause.Error(), maxErrorText)},
	}
	subject := s.p.pub.Subject(s.name, publisher.SubjectFailed)
	s.debugf("failed: raw kept, failed event published", "uid", src.ref, "code", ev.Error.Code, "raw", rel)
	fut, err := s.p.pub.PublishAsync(ctx, subject, ev)
	if err != nil {
		return nil, fmt.Errorf("pipeline %s %s: %w", s.name, src.ref, err)
	}
	row := ledgerRow{
		Server: s.name, Folder: src.folder, SourceRef: src.ref, RawSHA256: raw.SHA256, RawSize: raw.Size,
		EventID: ev.ID, Kind: string(publisher.KindFailed), Subject: publisher.SubjectFailed,
		Status: StatusFailed, Error: ev.Error.Message,
	}
	return s.newPubAck(fut, h, record{
		row:      row,
		c:        counters{fetched: 1, failed: 1},
		f:        &failedRow{eventID: base, rawPath: rel, err: ev.Error.Message},
		attempts: h.attempts,
	}), nil
}

// insertFailed inserts the pipeline_failed row of a failed event.
func insertFailed(ctx context.Context, tx *sqlx.Tx, row ledgerRow, f failedRow, now time.Time) error {
	_, err := tx.ExecContext(ctx, tx.Rebind(`
INSERT INTO pipeline_failed (event_id, server, folder, source_ref, raw_sha256, raw_size, raw_path, error,
  attempts, status, created_at, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?)
ON CONFLICT (event_id) DO NOTHING`),
		f.eventID, row.Server, sqlText(row.Folder, 1000), sqlText(row.SourceRef, 1000), row.RawSHA256, row.RawSize, f.rawPath,
		sqlText(f.err, maxErrorText), FailedPending, now, now)
	if err != nil {
		return fmt.Errorf("insert failed row %s: %w", row.SourceRef, err)
	}
	return nil
}

// writeRawAtomic copies r to path through a temporary file and a rename.
func writeRawAtomic(path string, r io.Reader) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".raw-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = io.Copy(f, r)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// ListFailed returns the failed mail of server ("" = all servers), pending
// first, oldest first.
func (p *Pipeline) ListFailed(ctx context.Context, server string) ([]Failed, error) {
	q := `SELECT event_id, server, folder, source_ref, raw_sha256, raw_size, raw_path, error, attempts, status,
  created_at, updated_at FROM pipeline_failed`
	var args []any
	if server != "" {
		q += ` WHERE server = ?`
		args = append(args, server)
	}
	q += ` ORDER BY CASE WHEN status = 'pending' THEN 0 ELSE 1 END, created_at, event_id`
	var fs []Failed
	if err := p.db.SelectContext(ctx, &fs, p.db.Rebind(q), args...); err != nil {
		return nil, fmt.Errorf("list failed mail: %w", err)
	}
	return fs, nil
}

// RetryResult is the outcome of retrying one failed message.
type RetryResult struct {
	EventID string
	Server  string
	// Kind and Subject are set when the full event was published.
	Kind    publisher.Kind
	Subject string
	// Err is nil when the event was published and the row marked retried;
	// otherwise the row stays pending (its error and attempts updated when
	// the parser still fails).
	Err error
}

// Retry parses the kept raw copies again (after a parser fix or a raised
// limit) and publishes the full event for each that now parses, with id
// EventID(server, mailbox, raw sha256), on the subject its kind selects;
// the ledger row becomes published (or suppressed) and the failed row
// retried. eventID "" retries all pending failed mail; an id with or
// without FailedIDSuffix retries that one (ErrNotFound when it is not
// pending). The error is for the selection; per-message outcomes are in
// the results.
func (p *Pipeline) Retry(ctx context.Context, eventID string) ([]RetryResult, error) {
	q := `SELECT event_id, server, folder, source_ref, raw_sha256, raw_size, raw_path, error, attempts, status,
  created_at, updated_at FROM pipeline_failed WHERE status = ?`
	args := []any{FailedPending}
	if eventID != "" {
		q += ` AND event_id = ?`
		args = append(args, strings.TrimSuffix(eventID, FailedIDSuffix))
	}
	q += ` ORDER BY created_at, event_id`
	var fs []Failed
	if err := p.db.SelectContext(ctx, &fs, p.db.Rebind(q), args...); err != nil {
		return nil, fmt.Errorf("retry failed mail: %w", err)
	}
	if eventID != "" && len(fs) == 0 {
		return nil, fmt.Errorf("retry failed mail %s: %w", eventID, ErrNotFound)
	}
	res := make([]RetryResult, 0, len(fs))
	for _, f := range fs {
		r := RetryResult{EventID: f.EventID, Server: f.Server}
		r.Kind, r.Subject, r.Err = p.retryOne(ctx, f)
		res = append(res, r)
	}
	return res, nil
}

func (p *Pipeline) retryOne(ctx context.Context, f Failed) (publisher.Kind, string, error) {
	s, ok := p.server(f.Server)
	if !ok {
		return "", "", fmt.Errorf("retry %s: server %s: %w", f.EventID, f.Server, ErrUnknownServer)
	}
	path := filepath.Join(p.dataDir, f.RawPath)
	file, err := os.Open(path)
	if err != nil {
		return "", "", fmt.Errorf("retry %s: open raw: %w", f.EventID, err)
	}
	defer file.Close()
	open := func() io.Reader {
		if _, err := file.Seek(0, io.SeekStart); err != nil {
			return errReader{err}
		}
		return file
	}
	stillFailed := func(perr error) error {
		now := p.now().UTC()
		if _, err := p.db.ExecContext(ctx, p.db.Rebind(
			`UPDATE pipeline_failed SET attempts = attempts + 1, error = ?, updated_at = ? WHERE event_id = ?`),
			sqlText(perr.Error(), maxErrorText), now, f.EventID); err != nil {
			return fmt.Errorf("retry %s: update failed row: %w", f.EventID, err)
		}
		return fmt.Errorf("retry %s: still failing: %w", f.EventID, perr)
	}
	if max := p.opts.MaxMessageBytes; max > 0 && f.RawSize > max {
		return "", "", stillFailed(fmt.Errorf("message of %d bytes is over max_message_bytes (%d); not parsed", f.RawSize, max))
	}
	m, perr := s.parse(ctx, open())
	if perr != nil {
		if transientParseError(perr) {
			return "", "", fmt.Errorf("retry %s: parse: %w", f.EventID, perr)
		}
		return "", "", stillFailed(perr)
	}
	src := source{folder: f.Folder, ref: f.SourceRef, received: f.CreatedAt.UTC()}
	ev, subject, err := s.build(ctx, m, src, publisher.Raw{Size: f.RawSize, SHA256: f.RawSHA256})
	if err != nil {
		return "", "", fmt.Errorf("retry %s: %w", f.EventID, err)
	}
	if ev.ID != f.EventID {
		// The server's mailbox identity changed since the mail failed; keep
		// the id the failed row promised.
		ev.ID = f.EventID
	}
	fut, err := s.publishFit(ctx, ev, subject, open)
	if errors.Is(err, publisher.ErrTooLarge) {
		return "", "", stillFailed(err)
	}
	if err != nil {
		return "", "", fmt.Errorf("retry %s: %w", f.EventID, err)
	}
	ack, err := fut.Wait(ctx)
	if err != nil {
		return "", "", fmt.Errorf("retry %s: %w", f.EventID, err)
	}
	status := StatusPublished
	c := counters{published: 1, failed: -1}
	if ev.Suppressed {
		status = StatusSuppressed
		c = counters{suppressed: 1, failed: -1}
	}
	now := p.now().UTC()
	err = p.inTx(ctx, "retry "+f.EventID, func(tx *sqlx.Tx) error {
		res, err := tx.ExecContext(ctx, tx.Rebind(`UPDATE pipeline_ledger SET message_id = ?, event_id = ?, kind = ?,
  subject = ?, status = ?, error = '', stream_seq = ?, updated_at = ? WHERE server = ? AND raw_sha256 = ?`),
			sqlKey(ev.MessageID), ev.ID, string(ev.Kind), subjectToken(subject), status, int64(ack.Sequence), now, f.Server, f.RawSHA256)
		if err != nil {
			return fmt.Errorf("update ledger row: %w", err)
		}
		if n, err := res.RowsAffected(); err == nil && n == 0 {
			if _, err := insertLedger(ctx, tx, ledgerRow{
				Server: f.Server, Folder: f.Folder, SourceRef: f.SourceRef, RawSHA256: f.RawSHA256, RawSize: f.RawSize,
				MessageID: ev.MessageID, EventID: ev.ID, Kind: string(ev.Kind), Subject: subjectToken(subject),
				Status: status, StreamSeq: ack.Sequence,
			}, now); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, tx.Rebind(
			`UPDATE pipeline_failed SET status = ?, attempts = attempts + 1, updated_at = ? WHERE event_id = ?`),
			FailedRetried, now, f.EventID); err != nil {
			return fmt.Errorf("update failed row: %w", err)
		}
		if err := deleteAttempts(ctx, tx, f.Server, f.RawSHA256); err != nil {
			return err
		}
		return bumpTx(ctx, tx, f.Server, c, now)
	})
	if err != nil {
		return "", "", err
	}
	return ev.Kind, subject, nil
}
