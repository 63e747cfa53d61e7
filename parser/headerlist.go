package parser

import (
	"bytes"
	"fmt"

	"github.com/emersion/go-message/textproto"
)

// WarnHeadersTruncated: Extra.Headers stopped at MaxHeaderListBytes.
const WarnHeadersTruncated = "headers_truncated"

// headerList lists the top-level header fields in order: the name as
// written, the value unfolded and decoded like the subject. Once names and
// values add up to more than MaxHeaderListBytes the remaining fields are
// left out, with a warning.
func (p *parser) headerList(h textproto.Header) []HeaderField {
	limit := p.opts.MaxHeaderListBytes
	if limit <= 0 {
		limit = DefaultMaxHeaderListBytes
	}
	out := make([]HeaderField, 0, h.Len())
	size := 0
	fs := h.Fields()
	for fs.Next() {
		key := fs.Key() // canonical form
		name := key
		if raw, err := fs.Raw(); err == nil {
			if i := bytes.IndexByte(raw, ':'); i > 0 {
				if n := bytes.TrimRight(raw[:i], " \t"); string(n) != key {
					name = string(n)
				}
			}
		}
		value := p.decodeHeaderText(key, fs.Value())
		size += len(name) + len(value)
		if size > limit {
			p.warn(WarnHeadersTruncated, fmt.Sprintf("header fields over %d bytes; %d of %d listed in headers", limit, len(out), fs.Len()))
			break
		}
		out = append(out, HeaderField{Name: name, Value: value})
	}
	return out
}
