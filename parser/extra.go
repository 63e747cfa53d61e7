package parser

import (
	"strings"

	"github.com/emersion/go-message/textproto"

	"github.com/mailworker/mailworker/config"
)

// Extra holds the fields inbound-parse services give a helpdesk beyond the
// basic envelope: which of the mailbox's addresses the mail was for, Bcc,
// all header fields, the signature and the sender authentication verdicts.
// They are additive, optional fields of event schema v1 (Message embeds
// Extra, so they appear at the top level of the JSON object).
type Extra struct {
	// Bcc is the Bcc header, present on sent copies; never null.
	Bcc []Address `json:"bcc"`
	// OriginalRecipient is which address the mail was delivered for (see
	// recipient.go); null when no trace header or configured address names it.
	OriginalRecipient *OriginalRecipient `json:"original_recipient"`
	// TicketRefSource says where TicketRef came from: "subject" or
	// "plus_address"; "" when TicketRef is "".
	TicketRefSource string `json:"ticket_ref_source"`
	// Signature is the signature split off ReplyText: from a "-- " line, or
	// from a mobile or Outlook footer ("Sent from my iPhone"); "" when none.
	Signature string `json:"signature"`
	// Headers are the top-level header fields in order, decoded, at most
	// MaxHeaderListBytes in total; never null.
	Headers []HeaderField `json:"headers"`
	// Auth holds the sender authentication verdicts the receiving servers
	// wrote (see authresults.go).
	Auth Auth `json:"auth"`
}

// OriginalRecipient is the address a mail was delivered for.
type OriginalRecipient struct {
	Address string `json:"address"` // as found, tag included
	Tag     string `json:"tag"`     // plus-address tag; "" when none
	// Source is the header it came from: delivered-to, x-original-to,
	// envelope-to, x-forwarded-to, to, cc or bcc.
	Source string `json:"source"`
}

// HeaderField is one header field: its name as written and its value
// unfolded and decoded (RFC 2047 words, raw 8-bit text).
type HeaderField struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Auth holds the verdicts of the Authentication-Results fields (RFC 8601)
// written by a trusted authserv-id, and of the X-Spam-* fields. Results are
// lower case as written (pass, fail, softfail, neutral, none, temperror,
// permerror, policy, ...); each is omitted when no trusted field reports it.
type Auth struct {
	AuthservID  string   `json:"authserv_id,omitempty"`  // the trusted authserv-id the results came from (the first one)
	SPF         string   `json:"spf,omitempty"`          // first spf result
	DKIM        string   `json:"dkim,omitempty"`         // pass when any signature passed, else the first dkim result
	DKIMDomains []string `json:"dkim_domains,omitempty"` // signing domains (header.d, else header.i) of passing signatures
	DMARC       string   `json:"dmarc,omitempty"`        // first dmarc result
	DMARCDomain string   `json:"dmarc_domain,omitempty"` // header.from of that result
	ARC         string   `json:"arc,omitempty"`          // first arc result
	SpamScore   *float64 `json:"spam_score,omitempty"`   // X-Spam-Score, else score= of X-Spam-Status
	SpamFlag    *bool    `json:"spam_flag,omitempty"`    // X-Spam-Flag, else the Yes/No of X-Spam-Status
}

// DefaultMaxHeaderListBytes bounds Extra.Headers: names and values of the
// listed fields add up to at most this many bytes.
const DefaultMaxHeaderListBytes = 64 << 10

// ServerOptions are the per-server settings that fill Extra.
type ServerOptions struct {
	// PlusAddressTicketRef takes the plus-address tag of the original
	// recipient (support+4711@example.com gives 4711) as TicketRef when
	// the subject has none.
	PlusAddressTicketRef bool
	// TrustedAuthservIDs are the authserv-ids whose Authentication-Results
	// fields are believed (compared case-insensitively). Empty trusts none.
	TrustedAuthservIDs []string
	// MaxHeaderListBytes bounds Extra.Headers; 0 means
	// DefaultMaxHeaderListBytes.
	MaxHeaderListBytes int
}

// ForServer returns o with the server's own addresses and its
// ServerOptions set (plus_address_ticket_ref, trusted_authserv_ids).
func (o Options) ForServer(srv config.Server) Options {
	o.OwnAddresses = append([]string(nil), srv.Addresses...)
	o.PlusAddressTicketRef = srv.PlusAddressTicketRef
	o.TrustedAuthservIDs = append([]string(nil), srv.TrustedAuthservIDs...)
	return o
}

// finishExtra fills Extra from the top-level header and the fields finish
// derived (it runs after finish).
func (p *parser) finishExtra(h textproto.Header) {
	m := p.msg
	if m.TicketRef != "" {
		m.TicketRefSource = "subject"
	}
	m.Bcc = p.addressList("Bcc", h.Values("Bcc"))
	tagAll(m.To)
	tagAll(m.Cc)
	tagAll(m.Bcc)
	m.OriginalRecipient = p.originalRecipient(h)
	if r := m.OriginalRecipient; r != nil && m.TicketRef == "" && p.opts.PlusAddressTicketRef && p.tagIsTicketRef(r) {
		m.TicketRef = r.Tag
		m.TicketRefSource = "plus_address"
	}
	m.ReplyText, m.Signature = splitSignature(m.ReplyText)
	m.Headers = p.headerList(h)
	m.Auth = p.authResults(h)
}

func containsFold(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(strings.TrimSpace(x), s) {
			return true
		}
	}
	return false
}
