package parser

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"io"
	"strings"
)

// Transfer decoders. They never fail on bad input: what cannot be decoded
// is skipped and reported through the warn callback (once per part), the
// way mail clients show such parts.

var b64val = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for i, c := range "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/" {
		t[c] = byte(i)
	}
	return t
}()

// base64Reader decodes base64 leniently: whitespace is skipped, other
// characters outside the alphabet are skipped with a warning, padding ends
// a group (data after it starts a new one, as when two encoded streams were
// concatenated) and a dangling single character is dropped with a warning.
type base64Reader struct {
	src    io.Reader
	in     []byte
	quad   []byte // filtered alphabet chars waiting to be decoded
	out    []byte
	outPos int
	eof    bool
	err    error
	warn   func()
	warned bool
}

func newBase64Reader(src io.Reader, warn func()) *base64Reader {
	return &base64Reader{src: src, in: make([]byte, 8*1024), quad: make([]byte, 0, 8*1024+4), warn: warn}
}

func (r *base64Reader) bad() {
	if !r.warned && r.warn != nil {
		r.warned = true
		r.warn()
	}
}

func (r *base64Reader) Read(p []byte) (int, error) {
	for r.outPos >= len(r.out) {
		if r.eof {
			if r.err != nil {
				return 0, r.err
			}
			return 0, io.EOF
		}
		r.fill()
	}
	n := copy(p, r.out[r.outPos:])
	r.outPos += n
	return n, nil
}

func (r *base64Reader) fill() {
	r.out = r.out[:0]
	r.outPos = 0
	n, err := r.src.Read(r.in)
	for _, c := range r.in[:n] {
		switch {
		case b64val[c] != 0xff:
			r.quad = append(r.quad, c)
		case c == '=':
			r.flushPartial()
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
		default:
			r.bad()
		}
	}
	// decode all complete quads, keep the remainder
	full := len(r.quad) / 4 * 4
	if full > 0 {
		r.out = grow(r.out, full/4*3)
		m, _ := base64.RawStdEncoding.Decode(r.out[len(r.out):len(r.out)+full/4*3], r.quad[:full])
		r.out = r.out[:len(r.out)+m]
		k := copy(r.quad, r.quad[full:])
		r.quad = r.quad[:k]
	}
	if err != nil {
		r.eof = true
		if err != io.EOF {
			r.err = err
		}
		r.flushPartial()
	}
}

func grow(b []byte, n int) []byte {
	if cap(b)-len(b) < n {
		nb := make([]byte, len(b), len(b)+n+1024)
		copy(nb, b)
		return nb
	}
	return b
}

// flushPartial decodes a trailing group of 2 or 3 characters (the padded
// end of a stream).
func (r *base64Reader) flushPartial() {
	full := len(r.quad) / 4 * 4
	if full > 0 {
		r.out = grow(r.out, full/4*3)
		m, _ := base64.RawStdEncoding.Decode(r.out[len(r.out):len(r.out)+full/4*3], r.quad[:full])
		r.out = r.out[:len(r.out)+m]
		k := copy(r.quad, r.quad[full:])
		r.quad = r.quad[:k]
	}
	switch len(r.quad) {
	case 0:
	case 1:
		r.bad()
	default:
		var buf [3]byte
		// Decode with the unused low bits possibly set: mask them off.
		q := make([]byte, len(r.quad))
		copy(q, r.quad)
		v := uint32(0)
		for _, c := range q {
			v = v<<6 | uint32(b64val[c])
		}
		if len(q) == 2 {
			buf[0] = byte(v >> 4)
			r.out = append(r.out, buf[0])
		} else {
			buf[0], buf[1] = byte(v>>10), byte(v>>2)
			r.out = append(r.out, buf[0], buf[1])
		}
	}
	r.quad = r.quad[:0]
}

// qpReader decodes quoted-printable (RFC 2045 section 6.7) leniently: an
// "=" not followed by two hex digits or a line end is kept as it is.
type qpReader struct {
	br   *bufio.Reader
	out  []byte
	pos  int
	err  error
	warn func()
}

func newQPReader(src io.Reader, warn func()) *qpReader {
	return &qpReader{br: bufio.NewReaderSize(src, 4096), warn: warn}
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

func (r *qpReader) Read(p []byte) (int, error) {
	for r.pos >= len(r.out) {
		if r.err != nil {
			return 0, r.err
		}
		r.out, r.pos = r.out[:0], 0
		line, err := r.br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			err = nil
		}
		r.decodeLine(line)
		if err != nil {
			r.err = err
		}
	}
	n := copy(p, r.out[r.pos:])
	r.pos += n
	return n, nil
}

func (r *qpReader) decodeLine(line []byte) {
	// split off the line end; trailing whitespace before it is transport
	// padding (RFC 2045 rule 3)
	body, nl := line, []byte(nil)
	if bytes.HasSuffix(body, []byte("\n")) {
		body = body[:len(body)-1]
		nl = []byte("\n")
		if bytes.HasSuffix(body, []byte("\r")) {
			body = body[:len(body)-1]
			nl = []byte("\r\n")
		}
		body = bytes.TrimRight(body, " \t")
	}
	soft := false
	if len(body) > 0 && body[len(body)-1] == '=' {
		body = body[:len(body)-1]
		soft = true
	}
	for i := 0; i < len(body); i++ {
		c := body[i]
		if c == '=' && i+2 < len(body) {
			h, ok1 := unhex(body[i+1])
			l, ok2 := unhex(body[i+2])
			if ok1 && ok2 {
				r.out = append(r.out, h<<4|l)
				i += 2
				continue
			}
		}
		r.out = append(r.out, c)
	}
	if !soft && nl != nil {
		r.out = append(r.out, nl...)
	}
}

// uuBegin reports whether line is a uuencode "begin MODE NAME" line and
// returns the name.
func uuBegin(line string) (string, bool) {
	line = strings.TrimRight(line, "\r\n")
	if !strings.HasPrefix(line, "begin ") {
		return "", false
	}
	rest := strings.TrimLeft(line[len("begin "):], " ")
	i := strings.IndexByte(rest, ' ')
	if i < 3 || i > 4 {
		return "", false
	}
	for _, c := range rest[:i] {
		if c < '0' || c > '7' {
			return "", false
		}
	}
	return strings.TrimSpace(rest[i+1:]), true
}

// uudecodeLine decodes one uuencoded line, appending to dst. ok is false
// for a line that is not valid uuencode.
func uudecodeLine(dst []byte, line string) ([]byte, bool) {
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return dst, true
	}
	n := int((line[0] - ' ') & 0x3f)
	if n == 0 {
		return dst, true
	}
	data := line[1:]
	need := (n + 2) / 3 * 4
	ok := true
	if len(data) < need {
		// some encoders strip trailing spaces: pad them back
		data += strings.Repeat(" ", need-len(data))
	}
	var out [3]byte
	got := 0
	for i := 0; i+3 < len(data) && got < n; i += 4 {
		var v uint32
		for j := 0; j < 4; j++ {
			c := data[i+j]
			if c < ' ' || c > '`' {
				ok = false
			}
			v = v<<6 | uint32((c-' ')&0x3f)
		}
		out[0], out[1], out[2] = byte(v>>16), byte(v>>8), byte(v)
		k := min(3, n-got)
		dst = append(dst, out[:k]...)
		got += k
	}
	return dst, ok
}

// uuReader decodes a body in x-uuencode transfer encoding: lines before
// "begin" are skipped, decoding stops at "end".
type uuReader struct {
	br      *bufio.Reader
	out     []byte
	pos     int
	started bool
	done    bool
	name    string
	warn    func()
}

func newUUReader(src io.Reader, warn func()) *uuReader {
	return &uuReader{br: bufio.NewReaderSize(src, 4096), warn: warn}
}

func (r *uuReader) Read(p []byte) (int, error) {
	for r.pos >= len(r.out) {
		if r.done {
			return 0, io.EOF
		}
		r.out, r.pos = r.out[:0], 0
		line, err := r.br.ReadString('\n')
		t := strings.TrimRight(line, "\r\n")
		switch {
		case !r.started:
			if name, ok := uuBegin(t); ok {
				r.started, r.name = true, name
			}
		case t == "end":
			r.done = true
		default:
			var ok bool
			r.out, ok = uudecodeLine(r.out, t)
			if !ok && r.warn != nil {
				r.warn()
				r.warn = nil
			}
		}
		if err != nil {
			r.done = true
			if err != io.EOF {
				return 0, err
			}
		}
	}
	n := copy(p, r.out[r.pos:])
	r.pos += n
	return n, nil
}
