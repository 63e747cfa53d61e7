package publisher

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/mailworker/mailworker/parser"
)

// SchemaV1 is the value of Event.Schema for this version of the schema.
const SchemaV1 = "mailworker.event.v1"

// Kind is what an event means to the helpdesk.
type Kind string

const (
	KindNewRequest Kind = "new_request" // opens a new request
	KindReply      Kind = "reply"       // updates an existing request
	KindAutoReply  Kind = "auto_reply"  // automatic reply or loop: never a new request
	KindBounce     Kind = "bounce"      // delivery status notification
	KindFailed     Kind = "failed"      // could not be parsed; raw kept, see Event.Error
)

// Subject tokens (the last token of <prefix>.<server>.<token>).
const (
	SubjectRequest    = "request"
	SubjectReply      = "reply"
	SubjectAuto       = "auto"
	SubjectSuppressed = "suppressed"
	SubjectFailed     = "failed"
)

// Event is one published message, schema v1 (publisher/schema/event.v1.json).
// The parser's fields are inlined at the top level of the JSON object.
type Event struct {
	Schema     string    `json:"schema"`      // SchemaV1
	ID         string    `json:"id"`          // EventID(server, mailbox, raw sha256); also Nats-Msg-Id
	Kind       Kind      `json:"kind"`        // set by the pipeline
	Server     string    `json:"server"`      // config name; "" for `mailworker parse`
	Mailbox    string    `json:"mailbox"`     // the server's mailbox address; "" for parse
	Folder     string    `json:"folder"`      // folder fetched from; "" when not fetched
	Source     string    `json:"source"`      // fetcher ref, e.g. imap:<uidvalidity>:<uid>; "" for replay/parse
	ReceivedAt time.Time `json:"received_at"` // when mailworker received it
	Raw        Raw       `json:"raw"`
	// Suppressed is true when the event went to the suppressed subject
	// because the server has disable_new_requests set.
	Suppressed bool `json:"suppressed"`
	// Error is set on failed events (kind failed); such events carry no body.
	Error *Failure `json:"error,omitempty"`

	*parser.Message
}

// Raw describes the raw message bytes.
type Raw struct {
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	// Object is where the raw copy is kept for failed events ("" otherwise).
	Object string `json:"object,omitempty"`
}

// Failure says why a message could not be turned into a full event.
type Failure struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// EventID derives the stable event id: the same raw bytes fetched again for
// the same server and mailbox (after a crash, a UIDVALIDITY reset, a replay)
// always yield the same id, which JetStream uses for dedupe.
func EventID(server, mailbox, rawSHA256 string) string {
	h := sha256.New()
	h.Write([]byte(SchemaV1))
	for _, s := range []string{server, mailbox, rawSHA256} {
		h.Write([]byte{0})
		h.Write([]byte(s))
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// Classify decides an event's kind from the parser's facts. threadKnown
// reports whether In-Reply-To or References name a Message-ID already
// published for the same server (the pipeline asks its ledger).
// Bounces and automatic mail never open requests; a ticket reference in the
// subject or a known thread makes a reply.
func Classify(m *parser.Message, threadKnown bool) Kind {
	switch {
	case m.Bounce:
		return KindBounce
	case m.AutoReply || m.Loop:
		return KindAutoReply
	case m.TicketRef != "" || threadKnown:
		return KindReply
	}
	return KindNewRequest
}

// SubjectToken maps a kind to the last token of its subject. Suppressed new
// requests go to SubjectSuppressed.
func SubjectToken(k Kind, suppressed bool) string {
	switch {
	case k == KindFailed:
		return SubjectFailed
	case k == KindReply:
		return SubjectReply
	case k == KindAutoReply || k == KindBounce:
		return SubjectAuto
	case suppressed:
		return SubjectSuppressed
	}
	return SubjectRequest
}

// Encode returns ev as the JSON published on the stream: no HTML escaping
// (a "<" stays "<", not "\u003c", which keeps HTML bodies readable and up
// to six times smaller), no trailing newline.
func Encode(ev *Event) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(ev); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte{'\n'}), nil
}

// ErrTooLarge is matched (errors.Is) by a *TooLargeError.
var ErrTooLarge = errors.New("event larger than the nats max payload")

// TooLargeError is returned by PublishAsync for an event whose encoding is
// over the connection's max payload; nothing was published. The pipeline
// trims the bodies by at least Size-Max bytes and tries again.
type TooLargeError struct {
	Size, Max int64 // encoded size and the limit (MaxPayload)
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("%s: %d bytes encoded, limit %d", ErrTooLarge, e.Size, e.Max)
}

// Is makes errors.Is(err, ErrTooLarge) true.
func (e *TooLargeError) Is(target error) bool { return target == ErrTooLarge }
