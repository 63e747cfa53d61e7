package parser

import "time"

// Message is what the parser learned from one raw message. Its JSON form is
// the body of event schema v1 (publisher.Event embeds it): field names and
// tags are part of the published contract, see publisher/schema/event.v1.json.
type Message struct {
	MessageID  string     `json:"message_id"`  // without angle brackets; "" when absent
	InReplyTo  string     `json:"in_reply_to"` // first id of In-Reply-To; "" when absent
	References []string   `json:"references"`  // ids in order, never null
	Date       *time.Time `json:"date"`        // null (with a warning) when missing or unparseable

	From    *Address  `json:"from"`     // first From mailbox; null when none is usable
	Sender  *Address  `json:"sender"`   // Sender header; null when absent
	ReplyTo []Address `json:"reply_to"` // never null
	To      []Address `json:"to"`       // groups flattened; never null
	Cc      []Address `json:"cc"`       // never null

	Subject   string `json:"subject"`    // decoded, whitespace-normalised
	TicketRef string `json:"ticket_ref"` // request number found in the subject; "" when none

	Text      string `json:"text"`       // text/plain body, or text derived from HTML
	HTML      string `json:"html"`       // HTML body as sent (cid: references intact)
	ReplyText string `json:"reply_text"` // new part of a reply, quoted history removed

	Attachments []Attachment `json:"attachments"` // never null

	AutoReply  bool        `json:"auto_reply"`
	Bounce     bool        `json:"bounce"`
	BounceInfo *BounceInfo `json:"bounce_info,omitempty"` // set when Bounce
	Loop       bool        `json:"loop"`

	// Recipient, header, signature and authentication fields (issue 17):
	// see recipient.go, headerlist.go, signature.go, authresults.go.
	Extra

	Warnings []Warning `json:"warnings"` // never null
}

// Address is one mailbox.
type Address struct {
	Address string `json:"address"`       // local@domain, decoded (RFC 6532 UTF-8 kept)
	Name    string `json:"name"`          // display name, decoded and unquoted; "" when none
	Tag     string `json:"tag,omitempty"` // plus-address tag of a recipient (support+4711@ gives 4711)
}

// Attachment describes one attachment; its bytes went to the Sink.
type Attachment struct {
	Filename    string `json:"filename"`         // decoded (RFC 2047, RFC 2231); "" when unknown
	ContentType string `json:"content_type"`     // type/subtype, lower case, no parameters
	Size        int64  `json:"size"`             // decoded bytes
	SHA256      string `json:"sha256"`           // hex of the decoded bytes
	ContentID   string `json:"content_id"`       // without angle brackets; "" when none
	Inline      bool   `json:"inline"`           // disposition inline, or referenced by cid
	Object      string `json:"object,omitempty"` // store key, when the sink stored it
}

// BounceInfo details a delivery status notification.
type BounceInfo struct {
	FailedRecipients  []string `json:"failed_recipients"` // Final-Recipient / Original-Recipient addresses
	Action            string   `json:"action,omitempty"`  // failed | delayed | ...
	Status            string   `json:"status,omitempty"`  // e.g. 5.1.1
	Diagnostic        string   `json:"diagnostic,omitempty"`
	OriginalMessageID string   `json:"original_message_id,omitempty"`
}

// Warning is something the parser recovered from.
type Warning struct {
	Code    string `json:"code"`    // short machine-readable code, e.g. "bad_base64"
	Message string `json:"message"` // human readable; never contains secrets
}
