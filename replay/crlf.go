package replay

import (
	"bytes"
	"io"
)

// crlfWriter writes to w with every bare LF turned into CRLF.
//
// IMAP transfers messages with CRLF line ends (RFC 9051 section 2.3.1.1 /
// RFC 5322 section 2.1), and servers convert what they store, so a fetch
// always sees CRLF. Replay normalises the same way: the raw bytes it
// delivers, and hence their SHA-256 and the event id, are those a fetch of
// the message would get, whether the file on disk used LF or CRLF, and
// whether it is replayed straight to the pipeline or through a mailbox.
type crlfWriter struct {
	w      io.Writer
	lastCR bool // the previous byte written was CR
}

func (c *crlfWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			if _, err := c.w.Write(p); err != nil {
				return 0, err
			}
			c.lastCR = p[len(p)-1] == '\r'
			return n, nil
		}
		cr := c.lastCR
		if i > 0 {
			cr = p[i-1] == '\r'
		}
		chunk := p[:i]
		if _, err := c.w.Write(chunk); err != nil {
			return 0, err
		}
		nl := []byte("\r\n")
		if cr {
			nl = nl[1:]
		}
		if _, err := c.w.Write(nl); err != nil {
			return 0, err
		}
		c.lastCR = false
		p = p[i+1:]
	}
	return n, nil
}
