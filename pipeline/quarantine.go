package pipeline

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"database/sql/driver"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime/debug"
	"strings"
	"syscall"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jmoiron/sqlx"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mailworker/mailworker/parser"
	"github.com/mailworker/mailworker/publisher"
)

// MaxAttempts is how many runs a message may fail with an error that is
// neither an outage nor known to be permanent before it is quarantined
// (published as failed, code too_many_attempts).
const MaxAttempts = 5

// errClass sorts the errors met while handling one message.
type errClass int

const (
	// classRetry: unknown; retried, counted in pipeline_attempts, and
	// quarantined after MaxAttempts runs.
	classRetry errClass = iota
	// classOutage: the broker, database or store is unreachable (or the
	// run is ending); retried without limit and not counted, because the
	// message is not at fault.
	classOutage
	// classPermanent: the message itself is refused (payload too large, a
	// value the database refuses, an attachment the store refuses, a
	// parser panic); quarantined at once.
	classPermanent
)

// errPanic wraps a recovered parser panic.
var errPanic = errors.New("parser panic")

// classify decides how err is handled; see errClass.
func classify(err error) errClass {
	if err == nil {
		return classRetry
	}
	switch {
	case errors.Is(err, errPanic), errors.Is(err, publisher.ErrTooLarge), errors.Is(err, nats.ErrMaxPayload):
		return classPermanent
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, publisher.ErrNotConnected), errors.Is(err, nats.ErrConnectionClosed),
		errors.Is(err, nats.ErrNoServers), errors.Is(err, nats.ErrNoResponders), errors.Is(err, nats.ErrTimeout),
		errors.Is(err, nats.ErrConnectionDraining), errors.Is(err, nats.ErrDisconnected),
		errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, jetstream.ErrAsyncPublishTimeout),
		errors.Is(err, driver.ErrBadConn), errors.Is(err, sql.ErrConnDone),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ENOSPC):
		return classOutage
	}
	var api *jetstream.APIError
	if !errors.Is(err, parser.ErrSink) && errors.As(err, &api) {
		switch api.ErrorCode {
		case jetstream.JSErrCodeStreamMessageExceedsMaximum:
			return classPermanent // the stream's max_msg_size
		case jetstream.JSErrCodeStreamNotFound, jetstream.JSErrCodeJetStreamNotEnabled,
			jetstream.JSErrCodeJetStreamNotEnabledForAccount:
			return classOutage // not the message's fault
		}
	}
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		switch {
		case strings.HasPrefix(pg.Code, "22"), // data exception: invalid byte sequence, value too long, ...
			strings.HasPrefix(pg.Code, "23"), // integrity constraint violation
			strings.HasPrefix(pg.Code, "54"): // program limit exceeded: index row too large, ...
			return classPermanent
		case strings.HasPrefix(pg.Code, "08"), // connection exception
			strings.HasPrefix(pg.Code, "53"), // insufficient resources
			strings.HasPrefix(pg.Code, "57"), // operator intervention (shutdown)
			strings.HasPrefix(pg.Code, "40"), // serialization failure, deadlock
			pg.Code == "55P03":               // lock not available
			return classOutage
		}
		return classRetry
	}
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		return classOutage
	}
	var lite interface{ Code() int }
	if errors.As(err, &lite) {
		switch lite.Code() & 0xff {
		case 18, 19, 20, 25: // SQLITE_TOOBIG, CONSTRAINT, MISMATCH, RANGE
			return classPermanent
		case 5, 6, 7, 8, 10, 13, 14: // BUSY, LOCKED, NOMEM, READONLY, IOERR, FULL, CANTOPEN
			return classOutage
		}
		return classRetry
	}
	if errors.Is(err, parser.ErrSink) {
		// The attachment store answered and refused the object (too large
		// for the bucket, bucket full, ...): the message is at fault.
		var api *jetstream.APIError
		if errors.As(err, &api) {
			return classPermanent
		}
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return classOutage
	}
	return classRetry
}

// codeOf is the failed event's Error.Code for an error quarantined as
// permanent.
func codeOf(err error) string {
	var pg *pgconn.PgError
	var lite interface{ Code() int }
	switch {
	case errors.Is(err, errPanic):
		return CodeParserPanic
	case errors.Is(err, publisher.ErrTooLarge), errors.Is(err, nats.ErrMaxPayload):
		return CodeEventTooLarge
	case errors.Is(err, parser.ErrSink):
		return CodeAttachmentRefused
	}
	var api *jetstream.APIError
	if errors.As(err, &api) && api.ErrorCode == jetstream.JSErrCodeStreamMessageExceedsMaximum {
		return CodeEventTooLarge
	}
	switch {
	case errors.As(err, &pg), errors.As(err, &lite):
		return CodeDBRefused
	}
	return CodeParseError
}

// maxKeyBytes bounds the header values written to indexed columns
// (message_id); PostgreSQL refuses btree entries over about 2.7 kB.
const maxKeyBytes = 255

// keyPrefix starts a hashed key (see sqlKey); the parser's Message-IDs
// carry no spaces, so none collides with a hashed one.
const keyPrefix = "sha256 "

// sqlKey maps a header value (Message-ID, In-Reply-To, References) to what
// is stored and looked up in the database: the value itself when it is
// valid UTF-8 without NUL and at most maxKeyBytes long, else "sha256 " and
// the hex SHA-256 of its bytes. The mapping is deterministic, so a reply
// naming the same odd Message-ID still finds its thread, and it is the
// same on SQLite and PostgreSQL.
func sqlKey(v string) string {
	if len(v) <= maxKeyBytes && utf8.ValidString(v) && !strings.ContainsRune(v, 0) {
		return v // includes keys already hashed: sqlKey(sqlKey(v)) == sqlKey(v)
	}
	sum := sha256.Sum256([]byte(v))
	return keyPrefix + hex.EncodeToString(sum[:])
}

// sqlText makes a free text value (an error message) safe for any
// database: valid UTF-8, no NUL, at most max bytes.
func sqlText(v string, max int) string {
	v = strings.ToValidUTF8(v, "\uFFFD")
	v = strings.ReplaceAll(v, "\x00", "\uFFFD")
	if len(v) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(v[cut]) {
			cut--
		}
		v = v[:cut] + "…"
	}
	return v
}

// safeParse runs parse and turns a panic into an error wrapping errPanic,
// so that the message is quarantined instead of crashing the worker or
// being retried forever.
func safeParse(parse func() (*parser.Message, error)) (m *parser.Message, err error) {
	defer func() {
		if r := recover(); r != nil {
			m = nil
			err = fmt.Errorf("%w: %v\n%s", errPanic, r, firstLines(string(debug.Stack()), 12))
		}
	}()
	return parse()
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, "\n")
}

// countAttempt records one more failed attempt on (server, sha) and
// returns the new count.
func (p *Pipeline) countAttempt(ctx context.Context, server, sha string, cause error) (int, error) {
	now := p.now().UTC()
	var n int
	err := p.db.GetContext(ctx, &n, p.db.Rebind(`
INSERT INTO pipeline_attempts (server, raw_sha256, attempts, last_error, created_at, updated_at)
VALUES (?, ?, 1, ?, ?, ?)
ON CONFLICT (server, raw_sha256) DO UPDATE SET
  attempts = pipeline_attempts.attempts + 1,
  last_error = excluded.last_error,
  updated_at = excluded.updated_at
RETURNING attempts`), server, sha, sqlText(cause.Error(), 2000), now, now)
	if err != nil {
		return 0, fmt.Errorf("ledger %s: count attempt on %s: %w", server, sha, err)
	}
	return n, nil
}

// trimToFit shortens ev's bodies, HTML first, then text (and reply_text,
// which is derived from text, to the same length), so that its
// encoding shrinks by at least excess bytes, and adds a body_truncated
// warning. It reports false when the bodies are too short to save that
// much (the event cannot fit by trimming).
func trimToFit(ev *publisher.Event, excess int64) bool {
	m := ev.Message
	if m == nil {
		return false
	}
	// Cutting n bytes of a body shrinks its JSON string by at least n; the
	// warning added below costs less than the slack.
	need := excess + 512
	htmlLen, textLen := int64(len(m.HTML)), int64(len(m.Text))
	html, text, reply := m.HTML, m.Text, m.ReplyText
	if htmlLen >= need {
		html = cutUTF8(html, int(htmlLen-need))
		need = 0
	} else {
		html, need = "", need-htmlLen
	}
	if need > 0 {
		// text and reply_text (the new part of text) are cut to one
		// length, the longest that saves enough: both keep their start.
		over := func(c int64) int64 { return max(0, textLen-c) + max(0, int64(len(reply))-c) }
		if over(0) < need {
			return false
		}
		lo, hi := int64(0), max(textLen, int64(len(reply))) // over(lo) >= need
		for lo < hi {
			mid := (lo + hi + 1) / 2
			if over(mid) >= need {
				lo = mid
			} else {
				hi = mid - 1
			}
		}
		text, reply = cutUTF8(text, int(lo)), cutUTF8(reply, int(lo))
	}
	// Copy the message: the parser's is not ours to change.
	c := *m
	c.HTML, c.Text, c.ReplyText = html, text, reply
	c.Warnings = append(append([]parser.Warning{}, m.Warnings...), parser.Warning{
		Code: WarnBodyTruncated,
		Message: fmt.Sprintf("event over the nats max payload: html cut from %d to %d bytes, text from %d to %d; the whole message is kept (raw.object)",
			htmlLen, len(html), textLen, len(text)),
	})
	ev.Message = &c
	return true
}

// errReader is a reader that fails with err.
type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

// deleteAttempts drops the attempt count of a message now recorded in the
// ledger.
func deleteAttempts(ctx context.Context, tx *sqlx.Tx, server, sha string) error {
	if _, err := tx.ExecContext(ctx, tx.Rebind(`DELETE FROM pipeline_attempts WHERE server = ? AND raw_sha256 = ?`), server, sha); err != nil {
		return fmt.Errorf("delete attempts of %s: %w", sha, err)
	}
	return nil
}

// cutUTF8 returns s cut to at most n bytes, at a character boundary.
func cutUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
