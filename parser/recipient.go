package parser

import (
	"strings"

	"github.com/emersion/go-message/textproto"
)

// traceFields are the headers receiving servers write with the address a
// mail was delivered for, in the order they are tried: Delivered-To
// (Postfix, Exim, Dovecot LDA, Gmail), X-Original-To (Postfix: the address
// before alias expansion), Envelope-To (Exim), X-Forwarded-To (forwarding
// rules, e.g. Gmail).
var traceFields = [...]struct{ name, source string }{
	{"Delivered-To", "delivered-to"},
	{"X-Original-To", "x-original-to"},
	{"Envelope-To", "envelope-to"},
	{"X-Forwarded-To", "x-forwarded-to"},
}

// originalRecipient decides which address the mail was for:
//
//  1. with own addresses configured, the first trace header address (in
//     the order of traceFields, each field's values top down) that is one
//     of them, a plus tag ignored;
//  2. else the first of the own addresses (in configured order) found in
//     To, Cc or Bcc, a plus tag ignored (Bcc'd and list mail lack it);
//  3. else the first trace header address, whatever it is;
//  4. else nil.
//
// To/Cc are never used without own addresses: which of several recipients
// the mail was for cannot be told then.
func (p *parser) originalRecipient(h textproto.Header) *OriginalRecipient {
	type cand struct{ addr, source string }
	var trace []cand
	for _, f := range traceFields {
		vs := h.Values(f.name)
		if len(vs) == 0 {
			continue
		}
		for _, a := range p.addressList(f.name, vs) {
			if a.Address != "" {
				trace = append(trace, cand{a.Address, f.source})
			}
		}
	}
	own := p.opts.OwnAddresses
	if len(own) > 0 {
		for _, c := range trace {
			if p.isOwnAddress(c.addr) {
				return newOriginalRecipient(c.addr, c.source)
			}
		}
		m := p.msg
		for _, o := range own {
			o = strings.TrimSpace(o)
			for _, l := range [...]struct {
				list   []Address
				source string
			}{{m.To, "to"}, {m.Cc, "cc"}, {m.Bcc, "bcc"}} {
				for _, a := range l.list {
					if sameMailbox(a.Address, o) {
						return newOriginalRecipient(a.Address, l.source)
					}
				}
			}
		}
	}
	if len(trace) > 0 {
		return newOriginalRecipient(trace[0].addr, trace[0].source)
	}
	return nil
}

func newOriginalRecipient(addr, source string) *OriginalRecipient {
	return &OriginalRecipient{Address: addr, Tag: plusTag(addr), Source: source}
}

// isOwnAddress reports whether addr, or addr without its plus tag, is one
// of the configured own addresses.
func (p *parser) isOwnAddress(addr string) bool {
	for _, o := range p.opts.OwnAddresses {
		if sameMailbox(addr, strings.TrimSpace(o)) {
			return true
		}
	}
	return false
}

// sameMailbox reports whether addr is own, or own with a plus tag added,
// case-insensitively.
func sameMailbox(addr, own string) bool {
	if strings.EqualFold(addr, own) {
		return true
	}
	if plusTag(addr) == "" {
		return false
	}
	return strings.EqualFold(stripTag(addr), own)
}

// plusTag returns the sub-address of addr (RFC 5233): what follows the
// first "+" of the local part; "" when none.
func plusTag(addr string) string {
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 {
		return ""
	}
	local := addr[:at]
	i := strings.IndexByte(local, '+')
	if i < 0 {
		return ""
	}
	return local[i+1:]
}

// stripTag returns addr without its plus tag.
func stripTag(addr string) string {
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 {
		return addr
	}
	if i := strings.IndexByte(addr[:at], '+'); i >= 0 {
		return addr[:i] + addr[at:]
	}
	return addr
}

// tagAll sets the Tag of each address.
func tagAll(list []Address) {
	for i := range list {
		list[i].Tag = plusTag(list[i].Address)
	}
}

// maxTicketTag bounds a plus tag read as ticket reference.
const maxTicketTag = 64

// tagIsTicketRef reports whether the tag of r may be read as a ticket
// reference: it is non-empty, at most 64 characters of letters, digits,
// '-', '_' and '.', and (when own addresses are configured) r is one of
// them, so a tag on some other address a mail passed through is never used.
func (p *parser) tagIsTicketRef(r *OriginalRecipient) bool {
	t := r.Tag
	if t == "" || len(t) > maxTicketTag {
		return false
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return len(p.opts.OwnAddresses) == 0 || p.isOwnAddress(r.Address)
}
