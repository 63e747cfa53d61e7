package spool

import (
	"bytes"
	"io"
	"os"
	"strings"
	"testing"
)

func readAll(t *testing.T, s *Spool) []byte {
	t.Helper()
	b, err := io.ReadAll(s.Open())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSpoolStaysInMemoryUpToLimit(t *testing.T) {
	s := New(t.TempDir(), 10)
	s.Grow(8)
	io.WriteString(s, "hello ")
	io.WriteString(s, "you!")
	if s.Bytes() == nil {
		t.Fatal("10 bytes with a 10-byte limit spilled to a file")
	}
	if got := string(readAll(t, s)); got != "hello you!" || s.Size() != 10 {
		t.Fatalf("content %q size %d", got, s.Size())
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestSpoolSpillsToUnlinkedFile(t *testing.T) {
	dir := t.TempDir()
	s := New(dir, 16)
	want := strings.Repeat("0123456789", 10)
	for i := 0; i < len(want); i += 7 {
		end := min(i+7, len(want))
		if _, err := io.WriteString(s, want[i:end]); err != nil {
			t.Fatal(err)
		}
	}
	if s.Bytes() != nil {
		t.Fatal("100 bytes with a 16-byte limit stayed in memory")
	}
	// The file is unlinked at once: nothing is left behind if we die.
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("spool left %d files in its directory", len(entries))
	}
	// It can be read more than once, and concurrently opened readers are
	// independent.
	r1, r2 := s.Open(), s.Open()
	buf := make([]byte, 5)
	io.ReadFull(r1, buf)
	if b, _ := io.ReadAll(r2); string(b) != want {
		t.Fatalf("second reader got %q", b)
	}
	if rest, _ := io.ReadAll(r1); string(buf)+string(rest) != want {
		t.Fatal("first reader lost its place")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestReadFromAndFromBytes(t *testing.T) {
	data := bytes.Repeat([]byte("x"), 1000)
	s, err := ReadFrom(bytes.NewReader(data), t.TempDir(), 100)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !bytes.Equal(readAll(t, s), data) || s.Size() != 1000 {
		t.Fatal("ReadFrom lost bytes")
	}
	f := FromBytes([]byte("abc"))
	if string(readAll(t, f)) != "abc" || f.Size() != 3 {
		t.Fatal("FromBytes")
	}
	var nilSpool *Spool
	if err := nilSpool.Close(); err != nil {
		t.Fatal("Close on nil spool")
	}
}

func TestGrowBeyondLimitIsIgnored(t *testing.T) {
	s := New(t.TempDir(), 1<<10)
	s.Grow(1 << 30) // must not allocate a gigabyte
	if cap(s.buf.Bytes()) > 1<<10 {
		t.Fatalf("Grow beyond the memory limit reserved %d bytes", cap(s.buf.Bytes()))
	}
}
