// Package fetcher reads new mail from incoming mail servers (IMAP, EWS,
// Microsoft Graph) and hands each raw message to a Sink.
//
// A fetcher owns its checkpoints (UIDVALIDITY and last UID for IMAP, opaque
// sync states for EWS and Graph) in the fetcher_checkpoints table. What is
// new is decided by the checkpoint, never by the \Seen or isRead flag.
//
// The contract with the Sink is at-least-once: a message is marked done at
// the source (post-fetch action) and the checkpoint advanced past it only
// after the Ack returned by Sink.Deliver has reported success. A crash at
// any point therefore re-delivers, never loses; the Sink turns re-deliveries
// into no-ops (ledger + JetStream dedupe).
package fetcher

import (
	"context"
	"io"
	"time"

	"github.com/mailworker/mailworker/spool"
)

// Message is one raw message fetched from a server.
type Message struct {
	Server string // config name of the server
	Folder string // folder it was fetched from
	// Ref identifies the message at the source, for the ledger and logs:
	// "imap:<uidvalidity>:<uid>", "ews:<itemid>", "graph:<id>".
	Ref string
	// UIDValidity and UID are set for IMAP.
	UIDValidity uint32
	UID         uint32
	// Received is the server's arrival time (INTERNALDATE, DateTimeReceived),
	// zero when unknown.
	Received time.Time
	// Body holds the raw RFC 5322 bytes; the Sink may Open it as often as it
	// needs until Deliver's Ack has completed. The fetcher releases it.
	Body *spool.Spool
}

// Sink receives fetched messages; pipeline.Pipeline implements it.
type Sink interface {
	// Deliver processes msg (parse, build the event, publish). It may return
	// before the broker has acknowledged the event; the fetcher waits on the
	// returned Ack before it marks the message done at the source. An error
	// (from Deliver or Ack.Wait) is transient: the fetch stops, nothing after
	// the last fully acknowledged message is checkpointed, and the next run
	// retries. A message that cannot be parsed is not an error: the Sink
	// keeps it raw and reports it as a failed event.
	Deliver(ctx context.Context, msg *Message) (Ack, error)
}

// Ack reports the outcome of a Deliver.
type Ack interface {
	// Wait blocks until the event is acknowledged by the broker (or was a
	// known duplicate) and the ledger row is written.
	Wait(ctx context.Context) error
}

// Fetcher fetches one configured server. Implementations: *IMAP, *EWS, *Graph.
// A Fetcher is used by one goroutine at a time (the scheduler serialises runs).
type Fetcher interface {
	// Fetch delivers every message newer than the checkpoint (at most
	// max_per_fetch) to sink, in source order, applying after_fetch and
	// advancing the checkpoint as acks complete.
	Fetch(ctx context.Context, sink Sink) (Stats, error)
	// Test logs in, reports capabilities and counts, and fetches the oldest
	// message read-only as a sample. It changes nothing at the source.
	Test(ctx context.Context) (*TestReport, error)
	// Close releases connections. Fetch may not be called afterwards.
	Close() error
}

// Stats summarises one Fetch.
type Stats struct {
	Seen      int   // messages newer than the checkpoint found at the source
	Delivered int   // messages delivered and acknowledged
	Bytes     int64 // raw bytes delivered
	More      bool  // max_per_fetch stopped the run before the end
}

// TestReport is what test-connection prints.
type TestReport struct {
	Server       string
	Protocol     string
	Endpoint     string   // host:port or URL
	Capabilities []string // IMAP capabilities, or server version/features
	AuthMethod   string   // e.g. PLAIN, XOAUTH2, Basic, Bearer
	Folder       string
	Messages     int    // messages in the folder
	Unseen       int    // -1 when unknown
	UIDValidity  uint32 // IMAP
	UIDNext      uint32 // IMAP
	Pending      int    // messages newer than the stored checkpoint, -1 when unknown
	// Sample is the oldest message in the folder, read without changing it;
	// nil when the folder is empty.
	Sample    io.Reader
	SampleRef string
}

// Credentials gives a fetcher what it needs to authenticate. Password
// servers use Password; OAuth servers use AccessToken.
type Credentials interface {
	// Password returns the server's password (password and ntlm methods).
	Password() (string, error)
	// AccessToken returns a valid OAuth access token. With refresh set it
	// first discards the cached token (after the server rejected it).
	// It returns an error wrapping oauth.ErrNeedsReauth when the grant is dead.
	AccessToken(ctx context.Context, refresh bool) (string, error)
}
