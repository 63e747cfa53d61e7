package parser

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/mail"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/emersion/go-message/charset"
	"github.com/emersion/go-message/textproto"
	"golang.org/x/text/encoding/charmap"
)

// readHeader reads one header block from br. It is lenient where
// textproto.ReadHeader is strict: an mbox "From " line at the top is
// skipped (top only), a line that is neither a field nor a continuation
// ends the header (the body then starts with it: the blank separator line
// is missing), and a block over max bytes is cut with a warning. rest is
// what must be read back before br (the line that started the body).
func (p *parser) readHeader(br *bufio.Reader, top bool) (h textproto.Header, rest []byte, err error) {
	var block bytes.Buffer
	size := 0
	first := true
	cut := false
	for {
		line, rerr := br.ReadSlice('\n')
		if rerr == bufio.ErrBufferFull {
			// very long line: collect it up to the header limit, skip the rest
			full := append([]byte(nil), line...)
			for rerr == bufio.ErrBufferFull {
				line, rerr = br.ReadSlice('\n')
				if len(full) <= p.opts.MaxHeaderBytes {
					full = append(full, line...)
				}
			}
			line = full
		}
		if len(line) == 0 && rerr != nil {
			if rerr != io.EOF {
				return h, nil, rerr
			}
			break
		}
		if first && top && bytes.HasPrefix(line, []byte("From ")) {
			first = false
			if rerr != nil {
				break
			}
			continue
		}
		trimmed := bytes.TrimRight(line, "\r\n")
		if len(trimmed) == 0 {
			break // end of header
		}
		isCont := trimmed[0] == ' ' || trimmed[0] == '\t'
		if first && isCont {
			// a folded line with nothing to continue: drop it
			isCont = false
			trimmed = bytes.TrimLeft(trimmed, " \t")
			if !isField(trimmed) {
				first = false
				if rerr != nil {
					break
				}
				continue
			}
		}
		first = false
		if !isCont && !isField(trimmed) {
			if nextIsField(br) {
				// a stray line inside the header (go-message issue #144):
				// skip it and keep reading fields
				p.warn(WarnBadHeader, "malformed header line skipped")
				if rerr != nil {
					break
				}
				continue
			}
			p.warn(WarnMissingHeaderSeparator, "header ends without a blank line")
			rest = append([]byte(nil), line...)
			break
		}
		size += len(line)
		if size > p.opts.MaxHeaderBytes {
			if !cut {
				cut = true
				p.warn(WarnHeaderTooLarge, fmt.Sprintf("header block over %d bytes; the rest of it is ignored", p.opts.MaxHeaderBytes))
			}
		} else {
			block.Write(trimmed)
			block.WriteString("\r\n")
		}
		if rerr != nil {
			if rerr != io.EOF {
				return h, nil, rerr
			}
			break
		}
	}
	block.WriteString("\r\n")
	// the buffer holds the whole block, so no line is ever split
	h, herr := textproto.ReadHeader(bufio.NewReaderSize(&block, max(16, block.Len()+1)))
	if herr != nil && !errors.Is(herr, io.EOF) {
		p.warn(WarnBadHeader, "malformed header field skipped")
	}
	return h, rest, nil
}

// nextIsField reports whether the next buffered line is a header field.
func nextIsField(br *bufio.Reader) bool {
	b, _ := br.Peek(min(br.Buffered(), 1024))
	if len(b) == 0 {
		b, _ = br.Peek(1)
		if len(b) == 0 {
			return false
		}
		b, _ = br.Peek(min(br.Buffered(), 1024))
	}
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		b = b[:i]
	}
	return isField(bytes.TrimRight(b, "\r"))
}

// isField reports whether line starts with a header field name and a colon.
func isField(line []byte) bool {
	i := bytes.IndexByte(line, ':')
	if i <= 0 {
		return false
	}
	for _, c := range bytes.TrimRight(line[:i], " \t") {
		if c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}

var wordDecoder = &mime.WordDecoder{CharsetReader: charset.Reader}

// decodeHeaderText decodes RFC 2047 encoded words and raw 8-bit text.
// Malformed encoded words are decoded one by one where possible and
// otherwise kept as they are, with a warning.
func (p *parser) decodeHeaderText(field, v string) string {
	v = p.fixUTF8(v)
	if !strings.Contains(v, "=?") {
		return v
	}
	if s, err := wordDecoder.DecodeHeader(v); err == nil {
		return s
	}
	p.warn(WarnBadEncodedWord, "malformed encoded word in "+field)
	return p.decodeWords(v)
}

// decodeWords decodes each =?charset?enc?text?= it can find, joining
// adjacent words, and keeps everything else. Words in unknown charsets are
// guessed (see decodeWordBytes).
func (p *parser) decodeWords(v string) string {
	var b strings.Builder
	lastWasWord := false
	for {
		i := strings.Index(v, "=?")
		if i < 0 {
			b.WriteString(v)
			break
		}
		// find the end "?=" after charset?enc?
		j := i + 2
		q1 := strings.IndexByte(v[j:], '?')
		if q1 < 0 {
			b.WriteString(v)
			break
		}
		q2 := -1
		if j+q1+2 < len(v) && v[j+q1+2] == '?' {
			q2 = j + q1 + 2
		}
		end := -1
		if q2 >= 0 {
			if e := strings.Index(v[q2+1:], "?="); e >= 0 {
				end = q2 + 1 + e + 2
			}
		}
		if end < 0 {
			b.WriteString(v[:i+2])
			v = v[i+2:]
			lastWasWord = false
			continue
		}
		word := v[i:end]
		between := v[:i]
		dec, err := wordDecoder.Decode(word)
		if err != nil {
			// try with spaces inside the word removed, then with the
			// encoded text taken as is
			dec, err = wordDecoder.Decode(strings.ReplaceAll(word, " ", "_"))
		}
		if err != nil {
			dec, err = p.decodeWordBytes(word)
		}
		if err != nil {
			b.WriteString(v[:end])
			lastWasWord = false
		} else {
			if !(lastWasWord && strings.TrimSpace(between) == "") {
				b.WriteString(between)
			}
			b.WriteString(dec)
			lastWasWord = true
		}
		v = v[end:]
	}
	return b.String()
}

// fixUTF8 turns raw 8-bit header bytes that are not UTF-8 (RFC 6532 allows
// UTF-8 only) into text, assuming the message's charset, else Windows-1252.
func (p *parser) fixUTF8(v string) string {
	if utf8.ValidString(v) {
		return v
	}
	if p.headerCharset != "" {
		if r, err := charset.Reader(p.headerCharset, strings.NewReader(v)); err == nil {
			if b, err := io.ReadAll(r); err == nil && utf8.Valid(b) {
				return string(b)
			}
		}
	}
	s, err := charmap.Windows1252.NewDecoder().String(v)
	if err != nil {
		return strings.ToValidUTF8(v, "\uFFFD")
	}
	return s
}

// normalizeSpace collapses runs of white space to one space and trims.
func normalizeSpace(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// msgIDs returns the ids in a Message-ID / In-Reply-To / References value,
// without angle brackets. Values without brackets are split on white space
// (RFC 5322 section 3.6.4 requires brackets; some mailers omit them).
func msgIDs(v string) []string {
	var ids []string
	rest := v
	for {
		i := strings.IndexByte(rest, '<')
		if i < 0 {
			break
		}
		j := strings.IndexByte(rest[i:], '>')
		if j < 0 {
			break
		}
		id := strings.Join(strings.Fields(rest[i+1:i+j]), "")
		if id != "" {
			ids = append(ids, id)
		}
		rest = rest[i+j+1:]
	}
	if ids == nil {
		for _, f := range strings.Fields(v) {
			f = strings.Trim(f, "<>,")
			if strings.Contains(f, "@") {
				ids = append(ids, f)
			}
		}
		if ids == nil {
			if s := strings.TrimSpace(strings.Trim(strings.TrimSpace(v), "<>")); s != "" && !strings.ContainsAny(s, " \t") {
				ids = append(ids, s)
			}
		}
	}
	return ids
}

var dateLayouts = []string{
	time.RFC1123Z,
	time.RFC1123,
	"Mon, 2 Jan 2006 15:04:05 -0700",
	"Mon, 2 Jan 2006 15:04:05 MST",
	"Mon, 2 Jan 2006 15:04 -0700",
	"2 Jan 2006 15:04:05 -0700",
	"2 Jan 2006 15:04:05 MST",
	"Mon, 2 Jan 06 15:04:05 -0700",
	"Mon, 2 Jan 2006 15:04:05",
	"Mon Jan 2 15:04:05 2006",
	"Mon Jan 2 15:04:05 -0700 2006",
	"Mon, 2 Jan 2006 15:04:05 -0700 (MST)",
	time.RFC3339,
	"2006-01-02 15:04:05 -0700",
	"2006-01-02 15:04:05",
}

// parseDate parses a Date header leniently (net/mail handles RFC 5322
// including the obsolete forms; the layouts catch what it rejects).
func parseDate(v string) (time.Time, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return time.Time{}, false
	}
	if t, err := mail.ParseDate(v); err == nil {
		return t, true
	}
	s := v
	// drop a trailing comment such as "(PST)" and repeated spaces
	if i := strings.IndexByte(s, '('); i > 0 {
		s = s[:i]
	}
	s = normalizeSpace(strings.ReplaceAll(s, ",", ", "))
	s = strings.ReplaceAll(s, ", ,", ",")
	if t, err := mail.ParseDate(s); err == nil {
		return t, true
	}
	for _, l := range dateLayouts {
		if t, err := time.Parse(l, s); err == nil {
			return t, true
		}
		if t, err := time.Parse(l, v); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}

// decodeWordBytes decodes an encoded word whose charset the decoder does
// not know (or whose payload is slightly broken): the bytes are recovered
// and turned into text by guessing (UTF-8, else the message charset, else
// Windows-1252).
func (p *parser) decodeWordBytes(word string) (string, error) {
	parts := strings.SplitN(strings.TrimSuffix(strings.TrimPrefix(word, "=?"), "?="), "?", 3)
	if len(parts) != 3 {
		return "", errors.New("not an encoded word")
	}
	cs, enc, text := parts[0], strings.ToLower(parts[1]), parts[2]
	if i := strings.IndexByte(cs, '*'); i >= 0 { // RFC 2231 language
		cs = cs[:i]
	}
	var raw []byte
	switch enc {
	case "b":
		raw, _ = io.ReadAll(newBase64Reader(strings.NewReader(text), nil))
	case "q":
		text = strings.ReplaceAll(text, "_", " ")
		raw = pctDecodeLenient(strings.ReplaceAll(strings.ReplaceAll(text, "%", "%25"), "=", "%"))
	default:
		return "", errors.New("unknown word encoding")
	}
	return p.bytesToUTF8(raw, cs), nil
}
