package parser

import (
	"fmt"
	"io"
	"regexp"
	"strings"

	"github.com/mailworker/mailworker/config"
)

// Default limits, used for zero Options fields.
const (
	DefaultMaxMessageBytes = 150 << 20 // 150 MB, what Exchange Online accepts
	DefaultMaxParts        = 1000
	DefaultMaxDepth        = 20
	DefaultMaxHeaderBytes  = 1 << 20 // 1 MiB
	DefaultMaxBodyBytes    = 1 << 20 // 1 MB each for text and html
	DefaultLoopHeader      = "X-Mailworker-Loop"
)

// DefaultTicketPatterns find a request number in a subject, tried in order;
// group 1 is the number. They match "[Request ID :##123##]", "##123##",
// "[Ticket#123]" and "[#123]".
var DefaultTicketPatterns = []string{
	`(?i)\[\s*Request\s+ID\s*:\s*##\s*(\d+)\s*##\s*\]`,
	`##\s*(\d+)\s*##`,
	`(?i)\[\s*Ticket\s*#\s*(\d+)\s*\]`,
	`\[\s*#\s*(\d+)\s*\]`,
}

var defaultTicketRegexps = mustCompileAll(DefaultTicketPatterns)

func mustCompileAll(pats []string) []*regexp.Regexp {
	res, err := compileTicketPatterns(pats)
	if err != nil {
		panic(err)
	}
	return res
}

// Options tune Parse. The zero value is ready to use: every zero field
// means its default.
type Options struct {
	MaxMessageBytes int64 // raw bytes read at most; default 150 MB; the rest is ignored with a warning (the pipeline never parses larger mail: it publishes it as failed, too_large)
	MaxParts        int   // MIME parts walked at most; default 1000
	MaxDepth        int   // multipart / message nesting at most; default 20
	MaxHeaderBytes  int   // bytes of one header block; default 1 MiB
	MaxBodyBytes    int   // text and html kept, each; default 1 MB (attachments are never truncated)

	// TicketPatterns find the request number in the subject, tried in
	// order; the number is the group named "ref" if there is one, else
	// group 1, else the whole match.
	// nil means DefaultTicketPatterns.
	TicketPatterns []*regexp.Regexp
	// LoopHeader is the header our own outgoing mail carries; a message
	// with it is marked Loop. "" means DefaultLoopHeader.
	LoopHeader string
	// OwnAddresses are the mailbox's own addresses; a message From one of
	// them is marked Loop. Compared case-insensitively.
	OwnAddresses []string
	// ServerOptions are the per-server settings of the fields of Extra
	// (see ForServer).
	ServerOptions

	// Sink receives every attachment's decoded bytes. nil discards them
	// (only size and SHA-256 are computed).
	Sink Sink
}

// Sink stores attachment bodies. Put is called once per attachment, in
// message order, from the goroutine that called Parse. It must read body
// to io.EOF (the parser discards whatever is left, so the hash is always of
// the whole body) and returns the key it stored the bytes under, or "" when
// it chose not to store them. meta has Filename, ContentType, ContentID and
// Inline set; Size and SHA256 are only known after body is consumed. An
// error aborts Parse with an error wrapping ErrSink.
type Sink interface {
	Put(meta Attachment, body io.Reader) (object string, err error)
}

func (o Options) withDefaults() Options {
	if o.MaxMessageBytes <= 0 {
		o.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if o.MaxParts <= 0 {
		o.MaxParts = DefaultMaxParts
	}
	if o.MaxDepth <= 0 {
		o.MaxDepth = DefaultMaxDepth
	}
	if o.MaxHeaderBytes <= 0 {
		o.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if o.TicketPatterns == nil {
		o.TicketPatterns = defaultTicketRegexps
	}
	if o.LoopHeader == "" {
		o.LoopHeader = DefaultLoopHeader
	}
	return o
}

// OptionsFromConfig maps the parser section of the configuration to
// Options, compiling the ticket patterns. Zero config values keep the
// defaults. The Sink and OwnAddresses are left for the caller.
func OptionsFromConfig(c config.Parser) (Options, error) {
	o := Options{
		MaxMessageBytes: c.MaxMessageBytes,
		MaxParts:        c.MaxParts,
		MaxDepth:        c.MaxDepth,
		MaxHeaderBytes:  c.MaxHeaderBytes,
		MaxBodyBytes:    c.MaxBodyBytes,
		LoopHeader:      strings.TrimSpace(c.LoopHeader),
	}
	if len(c.TicketPatterns) > 0 {
		res, err := compileTicketPatterns(c.TicketPatterns)
		if err != nil {
			return Options{}, err
		}
		o.TicketPatterns = res
	}
	return o.withDefaults(), nil
}

func compileTicketPatterns(pats []string) ([]*regexp.Regexp, error) {
	res := make([]*regexp.Regexp, 0, len(pats))
	for i, p := range pats {
		re, err := regexp.Compile(p)
		if err != nil {
			return nil, fmt.Errorf("parser: ticket pattern %d %q: %w", i+1, p, err)
		}
		res = append(res, re)
	}
	return res, nil
}
