// Package parser turns one raw RFC 5322 message into a Message: the decoded
// headers, the text and HTML bodies, the attachments' metadata and the facts
// the helpdesk classifies on (ticket reference, automatic reply, bounce,
// loop). The JSON form of Message is the body of event schema v1
// (publisher/schema/event.v1.json, documented in docs/events.md).
//
// Parse streams: the raw bytes are read once, attachment bodies go through
// SHA-256 and to a Sink (the publisher stores them in a JetStream Object
// Store) and are never held whole in memory. Only the text and HTML bodies
// are kept, each up to Options.MaxBodyBytes.
//
// Headers are read with go-message's textproto package and interpreted with
// go-message (Content-Type and Content-Disposition parameters including
// RFC 2231), its charset package (golang.org/x/text) and net/mail. The MIME
// tree is walked by this package's own lenient multipart reader rather than
// mail.Reader: go-message stops at the first "unexpected line", a missing
// final boundary or an unknown transfer encoding inside a multipart, while
// a helpdesk must still get the rest of such a message. Everything
// recoverable becomes a Warning on the Message; Parse fails only when
// nothing usable could be read.
//
// What the parser leaves to others: the event envelope (id, kind, server)
// is the publisher's, and storing attachment bytes is the Sink's.
package parser
