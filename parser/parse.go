package parser

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/emersion/go-message/textproto"
)

// parser holds the state of one Parse call.
type parser struct {
	opts     Options
	msg      *Message
	src      *sourceReader
	parts    int
	warnSeen map[string]bool

	headerCharset string // charset of the top-level Content-Type, for raw 8-bit headers

	text, html           strings.Builder
	textFull, htmlFull   bool
	inReport             bool
	bounce               *BounceInfo
	sinkErr              error
	partsWarned, deepErr bool
}

// sourceReader counts the raw bytes, enforces MaxMessageBytes and keeps the
// first read error, which it turns into io.EOF for the decoders above it so
// the walk ends cleanly; Parse reports the error.
type sourceReader struct {
	r         io.Reader
	n, max    int64
	err       error
	truncated bool
}

func (s *sourceReader) Read(b []byte) (int, error) {
	if s.err != nil {
		return 0, io.EOF
	}
	if s.n >= s.max {
		// probe whether there is more
		var one [1]byte
		if k, _ := s.r.Read(one[:]); k > 0 {
			s.truncated = true
		}
		return 0, io.EOF
	}
	if int64(len(b)) > s.max-s.n {
		b = b[:s.max-s.n]
	}
	n, err := s.r.Read(b)
	s.n += int64(n)
	if err != nil && err != io.EOF {
		s.err = err
		err = io.EOF
	}
	return n, err
}

// Parse reads one raw message from r and returns what it learned. r is
// read once, to the end or to Options.MaxMessageBytes. Attachment bodies
// go to opts.Sink as they are read.
//
// Broken MIME never fails Parse: it yields a Message with Warnings. Parse
// returns an error only when nothing usable could be read: ErrEmpty for
// empty input, an error wrapping ErrRead when r fails, and one wrapping
// ErrSink when the sink fails (the message is then incomplete and nil is
// returned).
func Parse(r io.Reader, opts Options) (*Message, error) {
	p := &parser{
		opts: opts.withDefaults(),
		msg: &Message{
			References:  []string{},
			ReplyTo:     []Address{},
			To:          []Address{},
			Cc:          []Address{},
			Attachments: []Attachment{},
			Warnings:    []Warning{},
		},
		warnSeen: map[string]bool{},
	}
	p.src = &sourceReader{r: r, max: p.opts.MaxMessageBytes}
	br := bufio.NewReaderSize(p.src, 16*1024)
	h, rest, err := p.readHeader(br, true)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRead, err)
	}
	if h.Len() == 0 && len(rest) == 0 {
		if _, err := br.Peek(1); err != nil {
			if p.src.err != nil {
				return nil, fmt.Errorf("%w: %w", ErrRead, p.src.err)
			}
			return nil, ErrEmpty
		}
	}
	if h.Len() == 0 {
		p.warn(WarnNoHeader, "the message has no header fields")
	}
	if _, params, _ := p.parseParamHeader(h.Get("Content-Type")); params["charset"] != "" {
		p.headerCharset = params["charset"]
	}
	p.topHeader(h)

	var body io.Reader = br
	if len(rest) > 0 {
		body = io.MultiReader(bytes.NewReader(rest), br)
	}
	p.entity(h, body, 0, "text/plain")
	if p.sinkErr != nil {
		return nil, p.sinkErr
	}
	if _, err := io.Copy(io.Discard, br); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRead, err)
	}
	if p.src.err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRead, p.src.err)
	}
	if p.src.truncated {
		p.warn(WarnMessageTooLarge, fmt.Sprintf("message over %d bytes; the rest was not read", p.opts.MaxMessageBytes))
	}
	p.finish(h)
	p.finishExtra(h)
	return p.msg, nil
}

// topHeader fills the envelope fields from the top-level header.
func (p *parser) topHeader(h textproto.Header) {
	m := p.msg
	if ids := msgIDs(h.Get("Message-Id")); len(ids) > 0 {
		m.MessageID = ids[0]
	}
	if ids := msgIDs(h.Get("In-Reply-To")); len(ids) > 0 {
		m.InReplyTo = ids[0]
	}
	if refs := msgIDs(strings.Join(h.Values("References"), " ")); len(refs) > 0 {
		m.References = refs
	}
	if h.Has("Date") {
		if t, ok := parseDate(h.Get("Date")); ok {
			m.Date = &t
		} else {
			p.warn(WarnBadDate, "unparseable Date header")
		}
	} else {
		p.warn(WarnMissingDate, "no Date header")
	}
	if from := p.addressList("From", h.Values("From")); len(from) > 0 {
		m.From = &from[0]
	}
	if s := p.addressList("Sender", h.Values("Sender")); len(s) > 0 {
		m.Sender = &s[0]
	}
	m.ReplyTo = p.addressList("Reply-To", h.Values("Reply-To"))
	m.To = p.addressList("To", h.Values("To"))
	m.Cc = p.addressList("Cc", h.Values("Cc"))
	m.Subject = normalizeSpace(p.decodeHeaderText("Subject", h.Get("Subject")))
}

// entity handles one MIME entity: its header h is read, body is the rest
// (still transfer-encoded).
func (p *parser) entity(h textproto.Header, body io.Reader, depth int, defType string) {
	if p.sinkErr != nil {
		return
	}
	p.parts++
	if p.parts > p.opts.MaxParts {
		if !p.partsWarned {
			p.partsWarned = true
			p.warn(WarnTooManyParts, fmt.Sprintf("more than %d MIME parts; the rest are ignored", p.opts.MaxParts))
		}
		return
	}
	ct, params := p.contentType(h, defType)
	disp, dparams, _ := p.parseParamHeader(h.Get("Content-Disposition"))
	if strings.HasPrefix(ct, "multipart/") {
		if depth >= p.opts.MaxDepth {
			p.warn(WarnTooDeep, fmt.Sprintf("MIME nesting deeper than %d; the deeper parts are ignored", p.opts.MaxDepth))
			return
		}
		if b := params["boundary"]; b != "" {
			p.multipart(ct, params, b, body, depth)
			return
		}
		p.warn(WarnMissingBoundary, ct+" without a boundary; read as text")
		ct = "text/plain"
	}
	decoded, uu := p.transferDecoder(h.Get("Content-Transfer-Encoding"), body)
	filename := dparams["filename"]
	if filename == "" {
		filename = params["name"]
	}
	if filename == "" {
		filename = dparams["name"]
	}
	if strings.Contains(filename, "=?") {
		filename = p.decodeWords(filename)
	}
	filename = strings.TrimSpace(filename)

	switch ct {
	case "message/rfc822", "message/global":
		if depth < p.opts.MaxDepth {
			p.attachedMessage(h, decoded, filename, disp)
			return
		}
	case "message/delivery-status", "message/global-delivery-status":
		p.deliveryStatus(decoded)
		return
	case "text/rfc822-headers", "text/rfc822-header":
		if p.inReport {
			p.reportedHeaders(decoded)
			return
		}
	}
	isBody := (ct == "text/plain" || ct == "text/html") && disp != "attachment" && filename == "" && uu == nil
	if isBody {
		p.textBody(ct, params["charset"], decoded)
		return
	}
	if uu != nil && filename == "" {
		// the name is on the "begin" line: read it first
		br := bufio.NewReader(decoded)
		br.Peek(1)
		filename = uu.name
		decoded = br
	}
	a := Attachment{
		Filename:    filename,
		ContentType: ct,
		ContentID:   contentID(h.Get("Content-Id")),
		Inline:      disp == "inline",
	}
	if ct == "application/ms-tnef" || ct == "application/vnd.ms-tnef" || strings.EqualFold(filename, "winmail.dat") {
		p.tnefAttachment(a, decoded)
		return
	}
	p.attachment(a, decoded)
}

func contentID(v string) string {
	v = strings.TrimSpace(v)
	if ids := msgIDs(v); len(ids) > 0 {
		return ids[0]
	}
	return strings.Trim(v, "<>")
}

// contentType returns the lower-case media type and its parameters;
// defType when the header is absent or unusable.
func (p *parser) contentType(h textproto.Header, defType string) (string, map[string]string) {
	v := h.Get("Content-Type")
	if strings.TrimSpace(v) == "" {
		return defType, map[string]string{}
	}
	ct, params, _ := p.parseParamHeader(v)
	ct = strings.Join(strings.Fields(ct), "")
	if i := strings.IndexByte(ct, '/'); i <= 0 || i == len(ct)-1 {
		p.warn(WarnBadContentType, fmt.Sprintf("unusable Content-Type %q; %s assumed", clip(ct, 40), defType))
		if ct == "text" {
			return "text/plain", params
		}
		return defType, params
	}
	return ct, params
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// transferDecoder undoes Content-Transfer-Encoding. uu is set for
// x-uuencode bodies (the file name may be on the begin line).
func (p *parser) transferDecoder(cte string, body io.Reader) (io.Reader, *uuReader) {
	cte = strings.ToLower(strings.TrimSpace(cte))
	if i := strings.IndexAny(cte, "; \t"); i >= 0 {
		cte = cte[:i]
	}
	switch cte {
	case "base64":
		return newBase64Reader(body, func() { p.warn(WarnBadBase64, "invalid base64 data skipped") }), nil
	case "quoted-printable":
		return newQPReader(body, nil), nil
	case "", "7bit", "8bit", "binary", "7-bit", "8-bit":
		return body, nil
	case "x-uuencode", "uuencode", "x-uue", "uue":
		u := newUUReader(body, func() { p.warn(WarnBadUUEncode, "invalid uuencoded line skipped") })
		return u, u
	}
	p.warn(WarnUnknownTransferEncoding, fmt.Sprintf("unknown Content-Transfer-Encoding %q; body taken as is", clip(cte, 40)))
	return body, nil
}

// multipart walks the parts of a multipart entity.
func (p *parser) multipart(ct string, params map[string]string, boundary string, body io.Reader, depth int) {
	if ct == "multipart/report" && strings.EqualFold(strings.TrimSpace(params["report-type"]), "delivery-status") {
		p.inReport = true
	}
	def := "text/plain"
	if ct == "multipart/digest" {
		def = "message/rfc822"
	}
	mr := newMultipartReader(body, boundary, p.opts.MaxBodyBytes)
	n := 0
	for p.sinkErr == nil && p.parts <= p.opts.MaxParts {
		part, err := mr.next()
		if err != nil {
			break
		}
		n++
		pbr := getReader(&partBufPool, part)
		h, rest, err := p.readHeader(pbr, false)
		if err != nil {
			putReader(&partBufPool, pbr)
			break
		}
		var pbody io.Reader = pbr
		if len(rest) > 0 {
			pbody = io.MultiReader(bytes.NewReader(rest), pbr)
		}
		p.entity(h, pbody, depth+1, def)
		_, err = io.Copy(io.Discard, pbody)
		putReader(&partBufPool, pbr)
		if err != nil {
			break
		}
	}
	defer mr.release()
	switch {
	case !mr.started:
		p.warn(WarnMissingBoundary, ct+": boundary never found; read as text")
		if len(mr.preamble) > 0 {
			p.textBody("text/plain", "", bytes.NewReader(mr.preamble))
		}
	case !mr.sawFinal && !p.partsWarned:
		p.warn(WarnMissingFinalBoundary, ct+" ends without its final boundary")
	}
}

// hashReader hashes and counts what is read through it.
type hashReader struct {
	r io.Reader
	h hash.Hash
	n int64
}

func (hr *hashReader) Read(b []byte) (int, error) {
	n, err := hr.r.Read(b)
	hr.h.Write(b[:n])
	hr.n += int64(n)
	return n, err
}

// attachment streams one attachment body through SHA-256 to the sink.
func (p *parser) attachment(a Attachment, body io.Reader) {
	hr := &hashReader{r: body, h: sha256.New()}
	if p.opts.Sink != nil && p.sinkErr == nil {
		obj, err := p.opts.Sink.Put(a, hr)
		if err != nil {
			p.sinkErr = fmt.Errorf("%w: attachment %d (%s): %w", ErrSink, len(p.msg.Attachments)+1, a.ContentType, err)
			return
		}
		a.Object = obj
	}
	// Reading cannot fail here: the decoders are lenient and sourceReader
	// turns a failing source into EOF and records the error for Parse.
	io.Copy(io.Discard, hr)
	a.Size = hr.n
	a.SHA256 = hex.EncodeToString(hr.h.Sum(nil))
	p.msg.Attachments = append(p.msg.Attachments, a)
}

// headPool holds the buffers attachedMessage reads an attached message's
// header into (64 KiB: long Received chains fit).
var headPool = sync.Pool{New: func() any { b := make([]byte, 64*1024); return &b }}

// attachedMessage handles a message/rfc822 part: an attachment named by
// its own filename, else by its subject + ".eml".
func (p *parser) attachedMessage(h textproto.Header, body io.Reader, filename, disp string) {
	buf := headPool.Get().(*[]byte)
	defer headPool.Put(buf)
	n, _ := io.ReadFull(body, *buf)
	head := (*buf)[:n]
	sub := &parser{opts: p.opts, msg: &Message{}, warnSeen: map[string]bool{}}
	ih, _, _ := sub.readHeader(bufio.NewReader(bytes.NewReader(head)), true)
	if p.inReport && p.bounce != nil && p.bounce.OriginalMessageID == "" || p.inReport && p.bounce == nil {
		p.noteOriginal(ih)
	}
	if filename == "" {
		subj := normalizeSpace(sub.decodeHeaderText("Subject", ih.Get("Subject")))
		filename = sanitizeFilename(subj)
		if filename == "" {
			filename = "message"
		}
		filename += ".eml"
	}
	a := Attachment{
		Filename:    filename,
		ContentType: "message/rfc822",
		ContentID:   contentID(h.Get("Content-Id")),
		Inline:      disp == "inline",
	}
	p.attachment(a, io.MultiReader(bytes.NewReader(head), body))
}

func sanitizeFilename(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r == '/' || r == '\\' || r < ' ' || r == 0x7f:
			return '_'
		}
		return r
	}, s)
}

// textBody keeps a text/plain or text/html body, decoded to UTF-8, up to
// MaxBodyBytes; uuencoded files inside plain text become attachments.
func (p *parser) textBody(ct, cs string, r io.Reader) {
	limit := p.opts.MaxBodyBytes
	raw, truncated := readUpTo(r, limit)
	if truncated {
		// do not leave half a UTF-8 sequence for the charset guess
		for i := len(raw) - 1; i >= 0 && i >= len(raw)-4; i-- {
			if utf8.RuneStart(raw[i]) {
				if !utf8.FullRune(raw[i:]) {
					raw = raw[:i]
				}
				break
			}
		}
	}
	if ct == "text/plain" && bytes.Contains(raw, []byte("begin ")) {
		raw = p.extractUUEncoded(raw)
	}
	s := strings.ReplaceAll(p.toUTF8(raw, cs, ct == "text/html"), "\r\n", "\n")
	dst, full, code, what := &p.text, &p.textFull, WarnTextTruncated, "text"
	if ct == "text/html" {
		dst, full, code, what = &p.html, &p.htmlFull, WarnHTMLTruncated, "HTML"
	}
	if *full {
		p.warn(code, fmt.Sprintf("%s body over %d bytes; cut", what, limit))
		return
	}
	if dst.Len() > 0 {
		if ct == "text/plain" && !strings.HasSuffix(dst.String(), "\n") {
			s = "\n" + s
		}
	}
	if dst.Len()+len(s) > limit {
		s = s[:cutUTF8(s, limit-dst.Len())]
		truncated = true
	}
	dst.WriteString(s)
	if truncated {
		*full = true
		p.warn(code, fmt.Sprintf("%s body over %d bytes; cut", what, limit))
	}
}

// cutUTF8 returns the largest index <= n that is a rune boundary of s.
func cutUTF8(s string, n int) int {
	if n <= 0 {
		return 0
	}
	if n >= len(s) {
		return len(s)
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return n
}

// readUpTo reads at most n bytes and discards the rest, reporting whether
// there was more.
func readUpTo(r io.Reader, n int) ([]byte, bool) {
	var buf bytes.Buffer
	if _, err := io.CopyN(&buf, r, int64(n)); err != nil {
		return buf.Bytes(), false
	}
	k, _ := io.Copy(io.Discard, r)
	return buf.Bytes(), k > 0
}

// extractUUEncoded turns "begin MODE NAME" ... "end" blocks of a text
// body into attachments and returns the text without them.
func (p *parser) extractUUEncoded(raw []byte) []byte {
	var out []byte
	rest := raw
	found := false
	for len(rest) > 0 {
		line := rest
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			line = rest[:i+1]
		}
		name, ok := uuBegin(string(line))
		if !ok {
			out = append(out, line...)
			rest = rest[len(line):]
			continue
		}
		// collect until "end"
		var data []byte
		r := rest[len(line):]
		ended := false
		for len(r) > 0 {
			l := r
			if i := bytes.IndexByte(r, '\n'); i >= 0 {
				l = r[:i+1]
			}
			r = r[len(l):]
			t := strings.TrimRight(string(l), "\r\n")
			if t == "end" {
				ended = true
				break
			}
			var ok bool
			data, ok = uudecodeLine(data, t)
			if !ok {
				// stop at the first invalid line: a block is valid up to
				// "end" or it is text (and scanning stays linear)
				break
			}
		}
		if !ended {
			// not uuencode after all
			out = append(out, line...)
			rest = rest[len(line):]
			continue
		}
		found = true
		p.attachment(Attachment{Filename: name, ContentType: typeByName(name)}, bytes.NewReader(data))
		rest = r
	}
	if !found {
		return raw
	}
	return out
}
