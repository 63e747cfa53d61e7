package parser

import "errors"

// Warning codes (Warning.Code). They are part of event schema v1: new codes
// may be added, existing ones keep their meaning.
const (
	WarnMissingFinalBoundary    = "missing_final_boundary"    // a multipart ended without its closing boundary
	WarnMissingBoundary         = "missing_boundary"          // multipart without a boundary (or never seen): read as text
	WarnBadBase64               = "bad_base64"                // characters outside base64 skipped, or a dangling character
	WarnBadUUEncode             = "bad_uuencode"              // invalid uuencoded line skipped
	WarnUnknownCharset          = "unknown_charset"           // text decoded as UTF-8 or Windows-1252 instead
	WarnUnknownTransferEncoding = "unknown_transfer_encoding" // body taken as it is (8bit)
	WarnBadEncodedWord          = "bad_encoded_word"          // malformed RFC 2047 word kept as it is
	WarnBadDate                 = "bad_date"                  // Date unparseable: date is null
	WarnMissingDate             = "missing_date"              // no Date header: date is null
	WarnBadAddress              = "bad_address"               // an address could not be parsed and was dropped
	WarnBadContentType          = "bad_content_type"          // Content-Type unparseable: default type used
	WarnBadHeader               = "bad_header"                // malformed header line skipped
	WarnMissingHeaderSeparator  = "missing_header_separator"  // no blank line after the header
	WarnHeaderTooLarge          = "header_too_large"          // header block over the limit; rest ignored
	WarnMessageTooLarge         = "message_too_large"         // message over the limit; rest ignored
	WarnTooManyParts            = "too_many_parts"            // over the part limit; remaining parts ignored
	WarnTooDeep                 = "too_deep"                  // nesting over the limit; deeper parts ignored
	WarnTextTruncated           = "text_truncated"            // text body cut at the limit
	WarnHTMLTruncated           = "html_truncated"            // HTML body cut at the limit
	WarnBadTNEF                 = "bad_tnef"                  // winmail.dat could not be decoded; kept as it is
	WarnNoHeader                = "no_header"                 // no header fields at all
)

// Sentinel errors of Parse.
var (
	// ErrEmpty is returned when the input holds no message at all (no
	// bytes, or only an mbox "From " line).
	ErrEmpty = errors.New("parser: empty message")
	// ErrSink wraps an error returned by Options.Sink; the message must be
	// parsed again once the sink works (the error is transient as far as
	// the parser knows).
	ErrSink = errors.New("parser: attachment sink failed")
	// ErrRead wraps an error returned by the input reader.
	ErrRead = errors.New("parser: reading the message failed")
)

func (p *parser) warn(code, msg string) {
	key := code + "\x00" + msg
	if p.warnSeen[key] {
		return
	}
	p.warnSeen[key] = true
	if len(p.msg.Warnings) >= maxWarnings {
		return
	}
	p.msg.Warnings = append(p.msg.Warnings, Warning{Code: code, Message: msg})
}

const maxWarnings = 100
