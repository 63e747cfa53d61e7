// Package spool holds one message's raw bytes in memory, or in a temporary
// file once they exceed a threshold, so that large mail never sits whole in
// the heap and can still be read more than once (parse, then keep raw).
package spool

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
)

// DefaultMemLimit is the size up to which a spool stays in memory.
const DefaultMemLimit = 4 << 20

// Spool is an append-only buffer that can be reopened for reading.
// It is not safe for concurrent writes; readers opened after the last Write
// may run concurrently.
type Spool struct {
	dir      string
	memLimit int
	buf      bytes.Buffer
	file     *os.File
	size     int64
}

// New returns an empty spool that keeps up to memLimit bytes in memory
// (DefaultMemLimit when memLimit <= 0) and spills to a file in dir ("" =
// os.TempDir) beyond that.
func New(dir string, memLimit int) *Spool {
	if memLimit <= 0 {
		memLimit = DefaultMemLimit
	}
	return &Spool{dir: dir, memLimit: memLimit}
}

// FromBytes returns a spool holding b (not copied).
func FromBytes(b []byte) *Spool {
	s := &Spool{memLimit: len(b) + 1}
	s.buf = *bytes.NewBuffer(b)
	s.size = int64(len(b))
	return s
}

// ReadFrom fills the spool from r.
func ReadFrom(r io.Reader, dir string, memLimit int) (*Spool, error) {
	s := New(dir, memLimit)
	if _, err := io.Copy(s, r); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Grow reserves room for n more bytes when they will stay in memory, so a
// message of known size (an IMAP literal) is copied without the buffer
// doubling its way up. A size beyond the memory limit is ignored: such a
// message goes to a file anyway.
func (s *Spool) Grow(n int64) {
	if s.file == nil && n > 0 && int64(s.buf.Len())+n <= int64(s.memLimit) {
		s.buf.Grow(int(n))
	}
}

// Write appends p.
func (s *Spool) Write(p []byte) (int, error) {
	if s.file == nil && s.buf.Len()+len(p) > s.memLimit {
		f, err := os.CreateTemp(s.dir, "mailworker-spool-*")
		if err != nil {
			return 0, fmt.Errorf("spool: %w", err)
		}
		// Unlink at once: the open descriptor keeps the data, and nothing
		// is left behind if the process dies.
		if err := os.Remove(f.Name()); err != nil {
			f.Close()
			return 0, fmt.Errorf("spool: %w", err)
		}
		if _, err := f.Write(s.buf.Bytes()); err != nil {
			f.Close()
			return 0, fmt.Errorf("spool: %w", err)
		}
		s.buf = bytes.Buffer{}
		s.file = f
	}
	var n int
	var err error
	if s.file != nil {
		n, err = s.file.WriteAt(p, s.size)
	} else {
		n, err = s.buf.Write(p)
	}
	s.size += int64(n)
	return n, err
}

// Size is the number of bytes written.
func (s *Spool) Size() int64 { return s.size }

// Open returns a reader over everything written so far.
func (s *Spool) Open() io.ReadSeeker {
	if s.file != nil {
		return io.NewSectionReader(s.file, 0, s.size)
	}
	return bytes.NewReader(s.buf.Bytes())
}

// Bytes returns the content when it is held in memory, or nil.
func (s *Spool) Bytes() []byte {
	if s.file != nil {
		return nil
	}
	return s.buf.Bytes()
}

// Close releases the spool's file, if any.
func (s *Spool) Close() error {
	if s == nil || s.file == nil {
		return nil
	}
	err := s.file.Close()
	s.file = nil
	if err != nil && !errors.Is(err, os.ErrClosed) {
		return err
	}
	return nil
}
