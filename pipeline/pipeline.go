// Package pipeline turns fetched raw mail into published events: it is the
// fetcher.Sink that parses each message (package parser), classifies it,
// publishes it (package publisher) and records it in its ledger.
//
// Order of operations for one message (see docs/pipeline.md):
//
//  1. hash the raw bytes (SHA-256, size);
//  2. look the hash up in the ledger: a message already published,
//     suppressed or failed for this server is acknowledged at once and
//     nothing is published again (this is what makes UIDVALIDITY resets,
//     expired delta tokens and replays safe beyond JetStream's window);
//  3. mail over max_message_bytes, and mail that failed MaxAttempts runs,
//     is not parsed but quarantined (below); otherwise parse (a parser
//     panic is recovered); if nothing usable comes out, keep the raw under
//     data_dir/failed/ and publish a failed event instead;
//  4. classify (reply by ticket reference or known thread, auto, bounce,
//     new request; suppressed when disable_new_requests applies);
//  5. publish asynchronously with Nats-Msg-Id = event id; an event over the
//     connection's max payload has its html, then its text, cut until it
//     fits (warning body_truncated; the raw is kept under data_dir/raw/);
//  6. Ack.Wait waits for the PubAck, then writes the ledger row and the
//     server's counters. Only after that may the fetcher act at the source
//     and advance its checkpoint.
//
// Errors are sorted by classify. An outage (NATS, the database or the
// attachment store unreachable, or the run ending) is returned by Deliver
// or Ack.Wait: nothing is recorded and the fetcher retries on its next run.
// A message at fault (event too large even when trimmed, a value the
// database refuses, an attachment the store refuses, a parser panic) is
// quarantined at once: its raw is kept under data_dir/failed/, a failed
// event with the reason is published and recorded, and Deliver/Wait
// succeed, so the fetcher moves past it. Any other error is returned and
// counted per (server, raw sha256) in pipeline_attempts; the MaxAttempts-th
// run that fails quarantines the message (too_many_attempts). Unparseable
// mail is not an error.
package pipeline

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/mailworker/mailworker/config"
	"github.com/mailworker/mailworker/fetcher"
	"github.com/mailworker/mailworker/parser"
	"github.com/mailworker/mailworker/publisher"
)

// Publisher is what the pipeline needs from package publisher.
type Publisher interface {
	// PublishAsync publishes ev on subject with Nats-Msg-Id = ev.ID.
	PublishAsync(ctx context.Context, subject string, ev *publisher.Event) (*publisher.Future, error)
	// Subject returns <prefix>.<server>.<token>.
	Subject(server, token string) string
}

// AttachmentStore gives the parser a sink for attachment bodies during
// one Parse; *publisher.Objects implements it.
type AttachmentStore interface {
	Sink(ctx context.Context) parser.Sink
}

// Deps are the pipeline's collaborators. DB and Publisher are required.
type Deps struct {
	DB        *sqlx.DB
	Publisher Publisher
	// Parser holds the parser limits and ticket patterns (see
	// parser.OptionsFromConfig). The Sink and OwnAddresses are set by the
	// pipeline per message and server.
	Parser parser.Options
	// Attachments, when non-nil, stores attachment bodies (the
	// attachments bucket); nil keeps only their size and hash.
	Attachments AttachmentStore
	// DataDir is where raw copies of failed mail are kept (DataDir/failed).
	DataDir string
	Logger  *slog.Logger
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

// Pipeline implements fetcher.Sink per server (ForServer), failed-mail
// handling (ListFailed, Retry) and run bookkeeping (RecordRun, Status).
// It is safe for concurrent use.
type Pipeline struct {
	db      *sqlx.DB
	pub     Publisher
	opts    parser.Options
	objects AttachmentStore
	dataDir string
	logger  *slog.Logger
	now     func() time.Time

	mu      sync.Mutex
	servers map[string]*serverSink

	// pending are published events whose ledger rows are not written yet;
	// flushMu serialises writing them (see pubAck).
	pendMu  sync.Mutex
	pending []*pubAck
	flushMu sync.Mutex

	stmtMu     sync.Mutex
	statusStmt *sqlx.Stmt // ledgerStatus, prepared on first use
}

// New returns a pipeline over deps.
func New(deps Deps) *Pipeline {
	p := &Pipeline{
		db:      deps.DB,
		pub:     deps.Publisher,
		opts:    deps.Parser,
		objects: deps.Attachments,
		dataDir: deps.DataDir,
		logger:  deps.Logger,
		now:     deps.Now,
		servers: map[string]*serverSink{},
	}
	if p.logger == nil {
		p.logger = slog.New(slog.DiscardHandler)
	}
	if p.now == nil {
		p.now = time.Now
	}
	return p
}

// ForServer returns the fetcher.Sink for srv: it binds the server's name,
// mailbox identity (see Mailbox), flags and email_debug. Calling it again
// for the same name (after a config reload) replaces the binding used by
// Retry. logger nil means the pipeline's logger.
func (p *Pipeline) ForServer(srv config.Server, logger *slog.Logger) fetcher.Sink {
	if logger == nil {
		logger = p.logger.With("account", srv.Name)
	}
	s := &serverSink{
		p:          p,
		name:       srv.Name,
		mailbox:    Mailbox(srv),
		own:        append([]string(nil), srv.Addresses...),
		extra:      parser.Options{}.ForServer(srv).ServerOptions,
		debug:      srv.EmailDebug,
		disableNew: srv.DisableNewRequests,
		allow:      append([]string(nil), srv.NewRequestAllow...),
		logger:     logger,
		inflight:   map[string]int{},
	}
	p.mu.Lock()
	p.servers[srv.Name] = s
	p.mu.Unlock()
	return s
}

func (p *Pipeline) server(name string) (*serverSink, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s, ok := p.servers[name]
	return s, ok
}

// Mailbox is the mailbox identity of srv that goes into events and event
// ids; it is config.Server.MailboxID (the first address, else the Graph
// mailbox, else the username; lower case), kept here because replay and
// tests name it.
func Mailbox(srv config.Server) string { return srv.MailboxID() }

// serverSink is the fetcher.Sink of one server.
type serverSink struct {
	p          *Pipeline
	name       string
	mailbox    string
	own        []string
	extra      parser.ServerOptions // plus_address_ticket_ref, trusted_authserv_ids
	debug      bool
	disableNew bool
	allow      []string
	logger     *slog.Logger

	// inflight counts Message-IDs published but not yet in the ledger, so
	// that a reply fetched right after its parent (before the parent's
	// ack) still finds the thread.
	mu       sync.Mutex
	inflight map[string]int
}

// source describes where a raw message came from.
type source struct {
	folder   string
	ref      string
	received time.Time // when mailworker received it
}

// handling is one message being delivered: what a quarantine needs.
type handling struct {
	msg      *fetcher.Message
	src      source
	raw      publisher.Raw
	attempts int // failed runs counted before this one (pipeline_attempts)
}

// Deliver implements fetcher.Sink. It returns an error only for an outage
// (see classify) or an error retried up to MaxAttempts runs; a message at
// fault is quarantined: its Ack records a failed event.
func (s *serverSink) Deliver(ctx context.Context, msg *fetcher.Message) (fetcher.Ack, error) {
	sha, size, err := hashBody(msg.Body.Open())
	if err != nil {
		return nil, fmt.Errorf("pipeline %s %s: read raw: %w", s.name, msg.Ref, err)
	}
	st, attempts, err := s.p.ledgerStatus(ctx, s.name, sha)
	if err != nil {
		return nil, err
	}
	if st != "" {
		s.debugf("duplicate raw: already in ledger, not published again", "uid", msg.Ref, "status", st)
		if err := s.p.bump(ctx, s.name, counters{fetched: 1, duplicates: 1}); err != nil {
			return nil, err
		}
		return doneAck{}, nil
	}
	h := &handling{
		msg:      msg,
		src:      source{folder: msg.Folder, ref: msg.Ref, received: s.p.now().UTC()},
		raw:      publisher.Raw{Size: size, SHA256: sha},
		attempts: attempts,
	}
	if attempts >= MaxAttempts {
		var last string
		if err := s.p.db.GetContext(ctx, &last, s.p.db.Rebind(`SELECT last_error FROM pipeline_attempts WHERE server = ? AND raw_sha256 = ?`), s.name, sha); err != nil {
			return nil, fmt.Errorf("ledger %s: look up attempts of %s: %w", s.name, sha, err)
		}
		return s.deliverFailed(ctx, h, CodeTooManyAttempts, fmt.Errorf("%d runs failed on this message; last error: %s", attempts, last))
	}
	if max := s.p.opts.MaxMessageBytes; max > 0 && size > max {
		return s.deliverFailed(ctx, h, CodeTooLarge, fmt.Errorf("message of %d bytes is over max_message_bytes (%d); not parsed", size, max))
	}
	ack, err := s.deliver(ctx, h)
	if err != nil {
		return s.onError(ctx, h, err)
	}
	return ack, nil
}

// deliver parses, classifies and publishes h.
func (s *serverSink) deliver(ctx context.Context, h *handling) (fetcher.Ack, error) {
	m, perr := s.parse(ctx, h.msg.Body.Open())
	if perr != nil {
		if transientParseError(perr) {
			return nil, fmt.Errorf("pipeline %s %s: parse: %w", s.name, h.src.ref, perr)
		}
		return s.deliverFailed(ctx, h, failureCode(perr), perr)
	}
	ev, subject, err := s.build(ctx, m, h.src, h.raw)
	if err != nil {
		return nil, err
	}
	return s.publish(ctx, h, ev, subject)
}

// onError decides what an error met while handling h means: an outage is
// returned (retried, not counted); a permanent error quarantines h; any
// other is counted and returned, until the MaxAttempts-th, which
// quarantines h.
func (s *serverSink) onError(ctx context.Context, h *handling, err error) (fetcher.Ack, error) {
	switch classify(err) {
	case classOutage:
		return nil, err
	case classPermanent:
		s.logger.Warn("message quarantined", "ref", h.src.ref, "raw_sha256", h.raw.SHA256, "code", codeOf(err), "err", err)
		return s.deliverFailed(ctx, h, codeOf(err), err)
	}
	n, cerr := s.p.countAttempt(ctx, s.name, h.raw.SHA256, err)
	if cerr != nil {
		return nil, fmt.Errorf("%w (and %w)", err, cerr)
	}
	if n < MaxAttempts {
		s.logger.Warn("message failed; retried next run", "ref", h.src.ref, "raw_sha256", h.raw.SHA256, "attempt", n, "max_attempts", MaxAttempts, "err", err)
		return nil, err
	}
	s.logger.Warn("message quarantined after too many attempts", "ref", h.src.ref, "raw_sha256", h.raw.SHA256, "attempts", n, "err", err)
	h.attempts = n
	return s.deliverFailed(ctx, h, CodeTooManyAttempts, fmt.Errorf("%d runs failed on this message; last error: %w", n, err))
}

// parse runs the parser with this server's own addresses and the
// attachment sink. A parser panic becomes an error wrapping errPanic.
func (s *serverSink) parse(ctx context.Context, r io.Reader) (*parser.Message, error) {
	opts := s.p.opts
	opts.OwnAddresses = s.own
	opts.ServerOptions = s.extra
	if s.p.objects != nil {
		opts.Sink = s.p.objects.Sink(ctx)
	}
	return safeParse(func() (*parser.Message, error) { return parser.Parse(r, opts) })
}

// transientParseError reports whether a Parse error must be retried
// rather than recorded as failed mail.
func transientParseError(err error) bool {
	return errors.Is(err, parser.ErrSink) || errors.Is(err, parser.ErrRead) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// build makes the full event for m and picks its subject.
func (s *serverSink) build(ctx context.Context, m *parser.Message, src source, raw publisher.Raw) (*publisher.Event, string, error) {
	ev := &publisher.Event{
		Schema:     publisher.SchemaV1,
		ID:         publisher.EventID(s.name, s.mailbox, raw.SHA256),
		Server:     s.name,
		Mailbox:    s.mailbox,
		Folder:     src.folder,
		Source:     src.ref,
		ReceivedAt: src.received,
		Raw:        raw,
		Message:    m,
	}
	thread, err := s.threadKnown(ctx, m)
	if err != nil {
		return nil, "", err
	}
	ev.Kind = publisher.Classify(m, thread != "")
	why := reason(m, ev.Kind, thread)
	if ev.Kind == publisher.KindNewRequest && s.disableNew {
		from := ""
		if m.From != nil {
			from = m.From.Address
		}
		if !allowed(from, s.allow) {
			ev.Suppressed = true
			why = "suppressed: disable_new_requests and sender not allowed"
		} else {
			why += "; sender in new_request_allow"
		}
	}
	token := publisher.SubjectToken(ev.Kind, ev.Suppressed)
	s.debugf("classified", "uid", src.ref, "msgid", m.MessageID, "kind", string(ev.Kind), "subject_token", token, "why", why)
	return ev, s.p.pub.Subject(s.name, token), nil
}

// reason explains a classification for email_debug logs.
func reason(m *parser.Message, k publisher.Kind, thread string) string {
	switch k {
	case publisher.KindBounce:
		return "bounce: delivery status notification"
	case publisher.KindAutoReply:
		if m.Loop {
			return "auto: loop (our own loop header or own address)"
		}
		return "auto: automatic reply headers"
	case publisher.KindReply:
		if m.TicketRef != "" && m.TicketRefSource == "plus_address" {
			return fmt.Sprintf("ticket_ref %s from the plus address %s", m.TicketRef, m.OriginalRecipient.Address)
		}
		if m.TicketRef != "" {
			return fmt.Sprintf("ticket_ref [#%s] in subject", m.TicketRef)
		}
		return thread
	}
	return "new request: no ticket reference, no known thread"
}

// allowed reports whether from matches an entry of allow: an exact address
// or *@domain, case-insensitively.
func allowed(from string, allow []string) bool {
	from = strings.ToLower(strings.TrimSpace(from))
	if from == "" {
		return false
	}
	at := strings.LastIndexByte(from, '@')
	for _, a := range allow {
		a = strings.ToLower(strings.TrimSpace(a))
		if a == from {
			return true
		}
		if strings.HasPrefix(a, "*@") && at >= 0 && from[at+1:] == a[2:] {
			return true
		}
	}
	return false
}

// maxThreadIDs bounds the Message-IDs looked up per message (In-Reply-To
// plus the newest References).
const maxThreadIDs = 50

// threadKnown returns why m belongs to a known thread ("" when it does
// not): In-Reply-To or one of References names a Message-ID published or
// suppressed for this server, or one in flight.
func (s *serverSink) threadKnown(ctx context.Context, m *parser.Message) (string, error) {
	refs := m.References
	if len(refs) > maxThreadIDs {
		refs = refs[len(refs)-maxThreadIDs:]
	}
	// Message-IDs are compared in their sqlKey form, as stored.
	inReplyTo := sqlKey(m.InReplyTo)
	ids := make([]string, 0, len(refs)+1)
	if inReplyTo != "" {
		ids = append(ids, inReplyTo)
	}
	for _, r := range refs {
		if r = sqlKey(r); r != "" && r != inReplyTo {
			ids = append(ids, r)
		}
	}
	if len(ids) == 0 {
		return "", nil
	}
	known := map[string]bool{}
	s.mu.Lock()
	for _, id := range ids {
		if s.inflight[id] > 0 {
			known[id] = true
		}
	}
	s.mu.Unlock()
	found, err := s.p.knownMessageIDs(ctx, s.name, ids)
	if err != nil {
		return "", err
	}
	for _, id := range found {
		known[id] = true
	}
	if inReplyTo != "" && known[inReplyTo] {
		return "in_reply_to names published message", nil
	}
	if len(known) > 0 {
		return "references name published message", nil
	}
	return "", nil
}

// addInflight counts id (a sqlKey form) in flight.
func (s *serverSink) addInflight(id string, d int) {
	if id == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inflight[id] += d; s.inflight[id] <= 0 {
		delete(s.inflight, id)
	}
}

// publish sends ev and returns the Ack that records it once acknowledged.
func (s *serverSink) publish(ctx context.Context, h *handling, ev *publisher.Event, subject string) (fetcher.Ack, error) {
	fut, err := s.publishFit(ctx, ev, subject, func() io.Reader { return h.msg.Body.Open() })
	if err != nil {
		return nil, fmt.Errorf("pipeline %s %s: %w", s.name, h.src.ref, err)
	}
	status := StatusPublished
	if ev.Suppressed {
		status = StatusSuppressed
	}
	row := ledgerRow{
		Server: s.name, Folder: h.src.folder, SourceRef: h.src.ref,
		RawSHA256: ev.Raw.SHA256, RawSize: ev.Raw.Size, MessageID: sqlKey(ev.MessageID),
		EventID: ev.ID, Kind: string(ev.Kind), Subject: subjectToken(subject), Status: status,
	}
	c := counters{fetched: 1, published: 1}
	if ev.Suppressed {
		c = counters{fetched: 1, suppressed: 1}
	}
	return s.newPubAck(fut, h, record{row: row, c: c, attempts: h.attempts}), nil
}

// lossyWarnings are the parser warnings after which the event lacks some
// of the message (parts or bytes not read): the raw message is kept.
var lossyWarnings = map[string]bool{
	parser.WarnTooManyParts:    true,
	parser.WarnTooDeep:         true,
	parser.WarnMessageTooLarge: true,
	parser.WarnHeaderTooLarge:  true,
	// event.headers lists only the first 64 KiB of header fields
	parser.WarnHeadersTruncated: true,
}

// publishFit publishes ev, first keeping the raw message (open gives its
// bytes) when the event lacks part of it: the parser dropped parts, or the
// event is over the connection's max payload, in which case its html, then
// its text, are cut until it fits (warning body_truncated). Raw.Object then
// names the copy under data_dir. An event that cannot fit even without
// bodies fails with an error wrapping publisher.ErrTooLarge (permanent).
func (s *serverSink) publishFit(ctx context.Context, ev *publisher.Event, subject string, open func() io.Reader) (*publisher.Future, error) {
	keep := func() error {
		if ev.Raw.Object != "" {
			return nil
		}
		rel := keptPath(ev.Raw.SHA256)
		if err := writeRawAtomic(filepath.Join(s.p.dataDir, rel), open()); err != nil {
			return fmt.Errorf("keep raw: %w", err)
		}
		ev.Raw.Object = rel
		return nil
	}
	if ev.Message != nil {
		for _, w := range ev.Warnings {
			if lossyWarnings[w.Code] {
				if err := keep(); err != nil {
					return nil, err
				}
				break
			}
		}
	}
	for try := 0; ; try++ {
		fut, err := s.p.pub.PublishAsync(ctx, subject, ev)
		var tl *publisher.TooLargeError
		if !errors.As(err, &tl) || try >= 3 {
			return fut, err
		}
		if err := keep(); err != nil {
			return nil, err
		}
		if !trimToFit(ev, tl.Size-tl.Max) {
			return nil, err
		}
		s.debugf("event over the nats max payload: bodies cut", "uid", ev.Source, "size", tl.Size, "max", tl.Max)
	}
}

func subjectToken(subject string) string {
	return subject[strings.LastIndexByte(subject, '.')+1:]
}

func (s *serverSink) debugf(msg string, args ...any) {
	if s.debug {
		s.logger.Debug(msg, args...)
	}
}

// hashBody returns the hex SHA-256 and size of r.
func hashBody(r io.Reader) (string, int64, error) {
	h := sha256.New()
	n, err := io.Copy(h, r)
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// doneAck is the Ack of a message that needed no publish.
type doneAck struct{}

func (doneAck) Wait(context.Context) error { return nil }
