package parser

import (
	"bufio"
	"bytes"
	"io"
	"sync"
)

// multipartReader splits a multipart body (RFC 2046 section 5.1) into
// parts. Unlike mime/multipart it never fails: lines before the first
// boundary are the preamble, a missing final boundary ends the last part
// at the end of input (sawFinal stays false), and anything between parts
// that is not a boundary belongs to the previous part.
type multipartReader struct {
	br       *bufio.Reader
	dash     []byte // "--" + boundary
	started  bool   // first delimiter seen
	inPart   bool   // a part is being read
	partEOF  bool   // the current part has ended
	sawFinal bool
	eof      bool
	midLine  bool // the last read ended inside a long line

	preamble    []byte // kept up to preambleMax, for multiparts without a delimiter
	preambleMax int

	buf       []byte
	pending   []byte
	pendingNL []byte
	nlbuf     [2]byte
}

// Buffers are pooled: every MIME part needs a line reader, and allocating
// them was most of the parser's garbage.
var (
	multipartBufPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 8*1024) }}
	partBufPool      = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4096) }}
)

func getReader(pool *sync.Pool, r io.Reader) *bufio.Reader {
	br := pool.Get().(*bufio.Reader)
	br.Reset(r)
	return br
}

func putReader(pool *sync.Pool, br *bufio.Reader) {
	br.Reset(nil)
	pool.Put(br)
}

// release returns the reader's buffer; m must not be used afterwards.
func (m *multipartReader) release() {
	putReader(&multipartBufPool, m.br)
	m.br = nil
}

func newMultipartReader(r io.Reader, boundary string, preambleMax int) *multipartReader {
	return &multipartReader{
		br:          getReader(&multipartBufPool, r),
		dash:        []byte("--" + boundary),
		preambleMax: preambleMax,
	}
}

// delim classifies a line: 1 delimiter, 2 final delimiter, 0 neither.
func (m *multipartReader) delim(line []byte) int {
	if !bytes.HasPrefix(line, m.dash) {
		return 0
	}
	rest := bytes.TrimRight(line[len(m.dash):], " \t\r\n")
	switch {
	case len(rest) == 0:
		return 1
	case bytes.HasPrefix(rest, []byte("--")):
		// "--boundary--" closes; text glued after it (seen in the wild:
		// "--boundary-->") is ignored rather than read as body
		return 2
	}
	return 0
}

// readLine returns the next line (with its line end) or a chunk of a very
// long line; isStart says whether it starts a line.
func (m *multipartReader) readLine() (line []byte, isStart bool, err error) {
	isStart = !m.midLine
	line, err = m.br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		m.midLine = true
		return line, isStart, nil
	}
	m.midLine = false
	return line, isStart, err
}

// next advances to the next part and returns a reader for its raw bytes
// (header and body). It returns io.EOF after the last part.
func (m *multipartReader) next() (io.Reader, error) {
	if m.inPart && !m.partEOF {
		if _, err := io.Copy(io.Discard, partReader{m}); err != nil {
			return nil, err
		}
	}
	m.inPart = false
	if m.eof || m.sawFinal {
		return nil, io.EOF
	}
	if !m.started {
		for {
			line, isStart, err := m.readLine()
			if isStart {
				switch m.delim(line) {
				case 1:
					m.started = true
					goto part
				case 2:
					m.started, m.sawFinal = true, true
					return nil, io.EOF
				}
			}
			if len(m.preamble) < m.preambleMax {
				m.preamble = append(m.preamble, line[:min(len(line), m.preambleMax-len(m.preamble))]...)
			}
			if err != nil {
				m.eof = true
				if err == io.EOF {
					return nil, io.EOF
				}
				return nil, err
			}
		}
	}
part:
	m.inPart, m.partEOF = true, false
	m.pending, m.pendingNL = nil, nil
	return partReader{m}, nil
}

type partReader struct{ m *multipartReader }

func (pr partReader) Read(p []byte) (int, error) {
	m := pr.m
	for len(m.pending) == 0 {
		if m.partEOF {
			return 0, io.EOF
		}
		line, isStart, err := m.readLine()
		if len(line) > 0 {
			if isStart {
				if d := m.delim(line); d != 0 {
					m.partEOF = true
					m.pendingNL = nil
					if d == 2 {
						m.sawFinal = true
					}
					return 0, io.EOF
				}
			}
			content, nl := line, []byte(nil)
			if !m.midLine && bytes.HasSuffix(content, []byte("\n")) {
				k := 1
				if bytes.HasSuffix(content, []byte("\r\n")) {
					k = 2
				}
				content, nl = content[:len(content)-k], content[len(content)-k:]
			}
			m.buf = append(m.buf[:0], m.pendingNL...)
			m.buf = append(m.buf, content...)
			m.pendingNL = append(m.nlbuf[:0], nl...)
			m.pending = m.buf
		}
		if err != nil {
			m.partEOF, m.eof = true, true
			m.pending = append(m.pending, m.pendingNL...)
			m.pendingNL = nil
			if len(m.pending) == 0 {
				if err == io.EOF {
					return 0, io.EOF
				}
				return 0, err
			}
		}
	}
	n := copy(p, m.pending)
	m.pending = m.pending[n:]
	return n, nil
}
