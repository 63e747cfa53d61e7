package replay

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/mail"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mailworker/mailworker/spool"
)

// Format is the layout of a replay source.
type Format string

const (
	FormatAuto    Format = ""        // detect per path (see Detect)
	FormatEML     Format = "eml"     // one RFC 5322 message per file
	FormatDir     Format = "dir"     // a directory tree of .eml files (and mbox files, detected)
	FormatMbox    Format = "mbox"    // an mbox file (mboxrd quoting undone)
	FormatMaildir Format = "maildir" // a Maildir: messages in cur/ and new/, tmp/ ignored
)

// ParseFormat checks a --format value.
func ParseFormat(s string) (Format, error) {
	switch f := Format(strings.ToLower(strings.TrimSpace(s))); f {
	case FormatAuto, "auto":
		return FormatAuto, nil
	case FormatEML, FormatDir, FormatMbox, FormatMaildir:
		return f, nil
	}
	return "", fmt.Errorf("unknown format %q (want eml, dir, mbox or maildir)", s)
}

// ErrBadMessage is wrapped by the reason of a file forced to be read as an
// mbox (--format mbox) that holds no "From " separator line. Single
// messages are never judged here: the target's parser decides, and what it
// cannot parse is published as a failed event, as a fetch would.
var ErrBadMessage = errors.New("not an mbox file")

// Item is one message read from a source, with bare LF line ends turned
// into CRLF (see crlfWriter). Body is released by the reader
// once the callback that received it returns; a callback that needs the
// bytes longer must copy them or finish with them first.
type Item struct {
	// File is the path the message was read from.
	File string
	// N is the 1-based message number within an mbox file, 0 otherwise.
	N int
	// Offset is the byte offset of the message's "From " line in an mbox
	// file, 0 otherwise.
	Offset int64
	// Date is the message's original date when known: the mbox "From " line
	// date, else the Date header. Zero when unknown.
	Date time.Time
	// Body holds the raw message bytes: mbox quoting undone, a leading mbox
	// "From " line dropped, bare LFs turned into CRLF.
	Body *spool.Spool
}

// Pos names the message for people: the file, plus the message number and
// byte offset for mbox files.
func (it *Item) Pos() string {
	if it.N == 0 {
		return it.File
	}
	return fmt.Sprintf("%s: message %d at byte %d", it.File, it.N, it.Offset)
}

// Ref is the fetcher.Message Ref of a replayed message:
// "replay:<file>" or "replay:<file>:<n>" for mbox messages.
func (it *Item) Ref() string {
	if it.N == 0 {
		return "replay:" + it.File
	}
	return fmt.Sprintf("replay:%s:%d", it.File, it.N)
}

// Failure is a message (or a whole file) that could not be replayed.
type Failure struct {
	Pos string // as Item.Pos
	Err error
}

func (f Failure) String() string { return f.Pos + ": " + f.Err.Error() }

// Source is one resolved input: a message file, an mbox file or a Maildir.
type Source struct {
	Path   string
	Format Format // FormatEML, FormatMbox or FormatMaildir
	// Files are the message files of a Maildir (cur/ and new/, sorted), or
	// Path itself for the other formats.
	Files []string
	Size  int64 // bytes on disk
}

// Plan is the list of sources a replay reads, resolved before the first
// message is read so progress can show totals.
type Plan struct {
	Sources []Source
	// Messages is the number of messages when known up front (no mbox
	// files), else -1.
	Messages int
	// Bytes is the total size of all sources.
	Bytes int64
}

// NewPlan resolves paths. With FormatAuto every path is detected: a
// directory with cur/ and new/ subdirectories is a Maildir, another
// directory is walked recursively (skipping hidden entries and Maildir tmp/
// folders), a file whose first line starts with "From " is an mbox, any
// other file a single message. A forced format applies to the paths given.
// Paths that do not exist are errors; nothing is read yet.
func NewPlan(paths []string, format Format) (*Plan, error) {
	p := &Plan{}
	for _, path := range paths {
		if err := p.add(path, format); err != nil {
			return nil, err
		}
	}
	p.Messages = 0
	for _, s := range p.Sources {
		p.Bytes += s.Size
		if s.Format == FormatMbox {
			p.Messages = -1
		}
	}
	if p.Messages == 0 {
		for _, s := range p.Sources {
			p.Messages += len(s.Files)
		}
	}
	return p, nil
}

func (p *Plan) add(path string, format Format) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	switch format {
	case FormatEML, FormatMbox:
		if fi.IsDir() {
			return fmt.Errorf("replay %s: is a directory, not an %s file", path, format)
		}
		p.Sources = append(p.Sources, Source{Path: path, Format: format, Files: []string{path}, Size: fi.Size()})
		return nil
	case FormatMaildir:
		return p.addMaildir(path)
	case FormatDir:
		if !fi.IsDir() {
			return fmt.Errorf("replay %s: not a directory", path)
		}
		return p.walk(path)
	}
	if fi.IsDir() {
		if isMaildir(path) {
			return p.addMaildir(path)
		}
		return p.walk(path)
	}
	p.Sources = append(p.Sources, Source{Path: path, Format: detectFile(path), Files: []string{path}, Size: fi.Size()})
	return nil
}

// isMaildir reports whether dir has cur/ and new/ subdirectories.
func isMaildir(dir string) bool {
	for _, sub := range []string{"cur", "new"} {
		fi, err := os.Stat(filepath.Join(dir, sub))
		if err != nil || !fi.IsDir() {
			return false
		}
	}
	return true
}

func (p *Plan) addMaildir(dir string) error {
	if !isMaildir(dir) {
		return fmt.Errorf("replay %s: not a Maildir (no cur/ and new/)", dir)
	}
	s := Source{Path: dir, Format: FormatMaildir}
	for _, sub := range []string{"cur", "new"} {
		ents, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil {
			return fmt.Errorf("replay: %w", err)
		}
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), ".") || !e.Type().IsRegular() {
				continue
			}
			fi, err := e.Info()
			if err != nil {
				return fmt.Errorf("replay: %w", err)
			}
			s.Files = append(s.Files, filepath.Join(dir, sub, e.Name()))
			s.Size += fi.Size()
		}
	}
	p.Sources = append(p.Sources, s)
	return nil
}

// walk adds every message file below root, in lexical order; nested
// Maildirs are added as Maildirs.
func (p *Plan) walk(root string) error {
	return filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("replay: %w", err)
		}
		if path != root && strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			if path != root && isMaildir(path) {
				if err := p.addMaildir(path); err != nil {
					return err
				}
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return fmt.Errorf("replay: %w", err)
		}
		p.Sources = append(p.Sources, Source{Path: path, Format: detectFile(path), Files: []string{path}, Size: fi.Size()})
		return nil
	})
}

// detectFile returns FormatMbox when the file starts with a "From " line,
// FormatEML otherwise (also when it cannot be read: the error is reported
// when the message is read).
func detectFile(path string) Format {
	f, err := os.Open(path)
	if err != nil {
		return FormatEML
	}
	defer f.Close()
	var b [5]byte
	if n, _ := io.ReadFull(f, b[:]); n == 5 && string(b[:]) == "From " {
		return FormatMbox
	}
	return FormatEML
}

// ReadOptions tunes Plan.Each. The zero value is usable.
type ReadOptions struct {
	// SpoolDir holds message bodies larger than MemLimit while they are
	// processed; "" means os.TempDir().
	SpoolDir string
	// MemLimit is the size up to which a message stays in memory; 0 means
	// spool.DefaultMemLimit.
	MemLimit int
	// Progress, when set, is called with the number of bytes read from
	// disk since its previous call.
	Progress func(n int64)
}

// Each reads every message of the plan in order and calls fn with it. A
// message or file that cannot be read, or is not mail, is passed to bad and
// reading goes on. An error from fn, or ctx ending, stops Each and is
// returned.
func (p *Plan) Each(ctx context.Context, opts ReadOptions, fn func(*Item) error, bad func(Failure)) error {
	for _, s := range p.Sources {
		switch s.Format {
		case FormatMbox:
			if err := readMbox(ctx, s.Path, opts, fn, bad); err != nil {
				return err
			}
		default:
			for _, file := range s.Files {
				if err := ctx.Err(); err != nil {
					return err
				}
				if err := readFile(file, opts, fn, bad); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// readFile reads one message file. A leading mbox "From " line (mail
// saved from an mbox, or a Maildir written by an mbox-minded tool) is the
// envelope, not part of the message: it is dropped and its date kept, so
// the file gives the same bytes, hence the same event id, as the same
// message read from an mbox. Nothing else is judged here: what the parser
// accepts (a banner line before the header, LF or CRLF) is delivered as it
// is, and what it cannot parse becomes a failed event at the target, as a
// fetch of the same bytes would.
func readFile(path string, opts ReadOptions, fn func(*Item) error, bad func(Failure)) error {
	f, err := os.Open(path)
	if err != nil {
		bad(Failure{Pos: path, Err: err})
		return nil
	}
	defer f.Close()
	it := &Item{File: path}
	br := bufio.NewReaderSize(f, 4096)
	var n int64
	if b, _ := br.Peek(5); string(b) == "From " {
		line, err := br.ReadSlice('\n')
		it.Date = fromLineDate(line)
		n += int64(len(line))
		for err == bufio.ErrBufferFull { // an overlong From line: skip the rest of it
			line, err = br.ReadSlice('\n')
			n += int64(len(line))
		}
		if err != nil && err != io.EOF {
			bad(Failure{Pos: path, Err: fmt.Errorf("read: %w", err)})
			return nil
		}
	}
	sp := spool.New(opts.SpoolDir, opts.MemLimit)
	defer sp.Close()
	it.Body = sp
	m, err := io.Copy(&crlfWriter{w: sp}, br)
	n += m
	if opts.Progress != nil {
		opts.Progress(n)
	}
	if err != nil {
		bad(Failure{Pos: path, Err: fmt.Errorf("read: %w", err)})
		return nil
	}
	return deliverItem(it, fn, bad)
}

// deliverItem fills it's Date from the Date header when the mbox "From "
// line gave none, and calls fn.
func deliverItem(it *Item, fn func(*Item) error, bad func(Failure)) error {
	if it.Date.IsZero() {
		date, err := headerDate(it.Body)
		if err != nil {
			bad(Failure{Pos: it.Pos(), Err: err})
			return nil
		}
		it.Date = date
	}
	return fn(it)
}

// sniffLimit bounds how much of a message is inspected by headerDate.
const sniffLimit = 64 << 10

// headerDate returns the time of the Date header when there is one that
// parses, else the zero time. Lines before the first header field (a
// banner such as "---- Original email message ----") are passed over, as
// the parser does. It never rejects a message: whether bytes are mail is
// the parser's judgement, made where the message is delivered.
func headerDate(sp *spool.Spool) (time.Time, error) {
	if sp.Size() == 0 {
		return time.Time{}, nil
	}
	head := make([]byte, min(sp.Size(), sniffLimit))
	if _, err := io.ReadFull(sp.Open(), head); err != nil {
		return time.Time{}, fmt.Errorf("read: %w", err)
	}
	for len(head) > 0 {
		line, _, _ := bytes.Cut(head, []byte("\n"))
		if isHeaderField(line) {
			break
		}
		if len(bytes.TrimRight(line, "\r")) == 0 {
			return time.Time{}, nil // no header field before the body
		}
		_, head, _ = bytes.Cut(head, []byte("\n"))
	}
	hdr := head
	if i := bytes.Index(hdr, []byte("\r\n\r\n")); i >= 0 {
		hdr = hdr[:i+2]
	}
	m, err := mail.ReadMessage(bytes.NewReader(append(hdr, '\r', '\n')))
	if err != nil {
		return time.Time{}, nil // a header net/mail dislikes: only the date is lost
	}
	d, err := m.Header.Date()
	if err != nil {
		return time.Time{}, nil
	}
	return d, nil
}

// isHeaderField reports whether line is "name: value" with a valid field
// name (RFC 5322 section 2.2: printable ASCII except colon).
func isHeaderField(line []byte) bool {
	name, _, ok := bytes.Cut(line, []byte(":"))
	if !ok || len(name) == 0 {
		return false
	}
	for _, c := range name {
		if c <= ' ' || c > '~' {
			return false
		}
	}
	return true
}

// readMbox streams an mbox file: one spool per message, never the whole
// file in memory. A "From " line separates messages only at the start of
// the file or after a blank line; that blank line belongs to the mbox, not
// to the message. mboxrd quoting is undone (">From " -> "From ",
// ">>From " -> ">From "). Content-Length headers are ignored. LF and CRLF
// files are both read; bare LFs become CRLF.
func readMbox(ctx context.Context, path string, opts ReadOptions, fn func(*Item) error, bad func(Failure)) error {
	f, err := os.Open(path)
	if err != nil {
		bad(Failure{Pos: path, Err: err})
		return nil
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 64<<10)

	var (
		offset     int64 // bytes consumed
		cur        *Item
		cw         *crlfWriter // writes to cur.Body
		pendBlank  []byte      // a blank line held back: it may precede a separator
		prevBlank  = true      // start of file counts as after a blank line
		lineStart  = true      // the next bytes read start a line
		n          int
		lastReport int64
	)
	finish := func() error {
		if cur == nil {
			return nil
		}
		it := cur
		cur = nil
		defer it.Body.Close()
		return deliverItem(it, fn, bad)
	}
	write := func(b []byte) {
		if cur == nil {
			return // bytes before the first separator: not a message
		}
		// Spool writes fail only when its temporary file does: report the
		// message as bad and skip the rest of it.
		if _, err := cw.Write(b); err != nil {
			bad(Failure{Pos: cur.Pos(), Err: fmt.Errorf("spool: %w", err)})
			cur.Body.Close()
			cur = nil
		}
	}
	for {
		line, err := r.ReadSlice('\n')
		if len(line) > 0 {
			start := offset
			offset += int64(len(line))
			if lineStart {
				blank := len(line) == 1 && line[0] == '\n' || len(line) == 2 && line[0] == '\r' && line[1] == '\n'
				switch {
				case prevBlank && bytes.HasPrefix(line, []byte("From ")):
					pendBlank = nil
					if err := ctx.Err(); err != nil {
						return err
					}
					if err := finish(); err != nil {
						return err
					}
					n++
					cur = &Item{File: path, N: n, Offset: start, Date: fromLineDate(line),
						Body: spool.New(opts.SpoolDir, opts.MemLimit)}
					cw = &crlfWriter{w: cur.Body}
					// An overlong From line: skip the rest of it.
					for err == bufio.ErrBufferFull {
						line, err = r.ReadSlice('\n')
						offset += int64(len(line))
					}
					prevBlank, lineStart = false, true
					goto next
				case blank:
					write(pendBlank)
					pendBlank = append(pendBlank[:0], line...)
					prevBlank = true
					goto next
				}
				write(pendBlank)
				pendBlank = nil
				if q := quotedFrom(line); q {
					line = line[1:]
				}
			}
			write(line)
			prevBlank = false
			lineStart = err != bufio.ErrBufferFull
		}
	next:
		if opts.Progress != nil && offset-lastReport >= 64<<10 {
			opts.Progress(offset - lastReport)
			lastReport = offset
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			if cur != nil {
				bad(Failure{Pos: cur.Pos(), Err: fmt.Errorf("read: %w", err)})
				cur.Body.Close()
				cur = nil
			} else {
				bad(Failure{Pos: fmt.Sprintf("%s: at byte %d", path, offset), Err: fmt.Errorf("read: %w", err)})
			}
			return nil
		}
	}
	// A trailing blank line before EOF belongs to the mbox too (writers end
	// every message with one).
	if opts.Progress != nil && offset > lastReport {
		opts.Progress(offset - lastReport)
	}
	if n == 0 {
		bad(Failure{Pos: path, Err: fmt.Errorf("%w: no \"From \" separator line found", ErrBadMessage)})
		return nil
	}
	return finish()
}

// quotedFrom reports whether line is ">From ", ">>From ", ... (mboxrd).
func quotedFrom(line []byte) bool {
	i := 0
	for i < len(line) && line[i] == '>' {
		i++
	}
	return i > 0 && bytes.HasPrefix(line[i:], []byte("From "))
}

// fromLineDate parses the asctime date of an mbox "From sender date" line;
// zero when it does not parse.
func fromLineDate(line []byte) time.Time {
	fields := strings.Fields(string(line))
	if len(fields) < 7 {
		return time.Time{}
	}
	// From addr Www Mmm dd hh:mm:ss yyyy [more]
	s := strings.Join(fields[2:7], " ")
	t, err := time.Parse("Mon Jan 2 15:04:05 2006", s)
	if err != nil {
		return time.Time{}
	}
	return t
}
