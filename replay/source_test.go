package replay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// collect is a Target that keeps what it was given.
type collect struct {
	items []Item
	raws  [][]byte
}

func (c *collect) Put(_ context.Context, it *Item) error {
	b, err := io.ReadAll(it.Body.Open())
	if err != nil {
		return err
	}
	c.items = append(c.items, *it)
	c.raws = append(c.raws, b)
	return nil
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func msg(subject, body, nl string) string {
	s := "From: a@example.com\nTo: b@example.com\nSubject: " + subject +
		"\nDate: Tue, 25 Nov 2026 06:00:00 +0000\nMessage-ID: <" + strings.ReplaceAll(subject, " ", "") + "@example.com>\n\n" + body
	return strings.ReplaceAll(s, "\n", nl)
}

func replayAll(t *testing.T, paths []string, f Format) (*collect, Result, error) {
	t.Helper()
	plan, err := NewPlan(paths, f)
	if err != nil {
		t.Fatalf("NewPlan(%v): %v", paths, err)
	}
	c := &collect{}
	res, err := Run(context.Background(), plan, Options{Target: c})
	return c, res, err
}

func TestMbox(t *testing.T) {
	for _, nl := range []string{"\n", "\r\n"} {
		t.Run(fmt.Sprintf("%q", nl), func(t *testing.T) {
			// Originals, as they must come out again.
			m1 := msg("one", "Hello\nFrom the start of a line\n>From quoted once\n\nFrom here too after a blank line\nend\n", nl)
			m2 := msg("two", "no trailing newline", nl)
			m3 := msg("three", "Content-Length lies\n\n\n", nl)
			quote := func(m string) string {
				var b strings.Builder
				for _, l := range strings.SplitAfter(m, "\n") {
					if quotedFrom([]byte(l)) || strings.HasPrefix(l, "From ") {
						b.WriteString(">")
					}
					b.WriteString(l)
				}
				return b.String()
			}
			mbox := "From a@example.com Tue Nov 25 06:00:00 2026" + nl + quote(m1) + nl +
				"From b@example.com Wed Nov 26 07:30:00 2026" + nl + quote(m2) + nl + nl +
				"From c@example.com bogus date" + nl + quote(strings.Replace(m3, "Subject", "Content-Length: 3"+nl+"Subject", 1)) + nl
			path := filepath.Join(t.TempDir(), "box")
			writeFile(t, path, mbox)

			c, res, err := replayAll(t, []string{path}, FormatAuto)
			if err != nil {
				t.Fatalf("Run: %v (failures %v)", err, res.Failures)
			}
			want := []string{m1, m2 + nl, strings.Replace(m3, "Subject", "Content-Length: 3"+nl+"Subject", 1)}
			for i, w := range want { // replay delivers CRLF, as IMAP does
				want[i] = strings.ReplaceAll(strings.ReplaceAll(w, "\r\n", "\n"), "\n", "\r\n")
			}
			if len(c.raws) != len(want) {
				t.Fatalf("got %d messages, want %d", len(c.raws), len(want))
			}
			for i, w := range want {
				if string(c.raws[i]) != w {
					t.Errorf("message %d = %q, want %q", i+1, c.raws[i], w)
				}
				if c.items[i].N != i+1 {
					t.Errorf("message %d: N = %d", i+1, c.items[i].N)
				}
			}
			if got := c.items[1].Date; !got.Equal(time.Date(2026, 11, 26, 7, 30, 0, 0, time.UTC)) {
				t.Errorf("message 2 date = %v, want the From line's", got)
			}
			if got := c.items[2].Date; !got.Equal(time.Date(2026, 11, 25, 6, 0, 0, 0, time.UTC)) {
				t.Errorf("message 3 date = %v, want the Date header's", got)
			}
			if off := c.items[1].Offset; !strings.HasPrefix(mbox[off:], "From b@") {
				t.Errorf("message 2 offset %d points at %q", off, mbox[off:off+10])
			}
			if res.Replayed != 3 || res.Bytes != int64(len(want[0])+len(want[1])+len(want[2])) {
				t.Errorf("Result = %+v", res)
			}
		})
	}
}

func TestDirMaildirAndCorrupt(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "a.eml"), msg("a", "x\n", "\r\n"))
	writeFile(t, filepath.Join(dir, "sub", "b.eml"), msg("b", "y\n", "\n"))
	writeFile(t, filepath.Join(dir, "sub", "empty.eml"), "")
	writeFile(t, filepath.Join(dir, "sub", "blob.bin"), "\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
	writeFile(t, filepath.Join(dir, ".hidden"), msg("hidden", "z\n", "\n"))
	unreadable := filepath.Join(dir, "sub", "unreadable.eml")
	writeFile(t, unreadable, msg("u", "z\n", "\n"))
	if err := os.Chmod(unreadable, 0); err != nil {
		t.Fatal(err)
	}
	gone := filepath.Join(dir, "sub", "gone.eml") // removed after planning
	writeFile(t, gone, msg("gone", "z\n", "\n"))
	md := filepath.Join(dir, "Maildir")
	writeFile(t, filepath.Join(md, "cur", "1.host:2,S"), msg("cur", "c\n", "\n"))
	writeFile(t, filepath.Join(md, "new", "2.host"), msg("new", "n\n", "\n"))
	writeFile(t, filepath.Join(md, "tmp", "3.host"), msg("tmp", "t\n", "\n"))
	writeFile(t, filepath.Join(dir, "z.mbox"), "From x Tue Nov 25 06:00:00 2026\n"+msg("mb", "m\n", "\n"))

	plan, err := NewPlan([]string{dir}, FormatAuto)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(gone); err != nil {
		t.Fatal(err)
	}
	if plan.Messages != -1 {
		t.Errorf("Messages = %d, want -1 (an mbox is in the tree)", plan.Messages)
	}
	c := &collect{}
	var progress bytes.Buffer
	res, err := Run(context.Background(), plan, Options{Target: c, Progress: &progress})
	if !errors.Is(err, ErrFailures) {
		t.Fatalf("Run err = %v, want ErrFailures", err)
	}
	var subjects []string
	for _, r := range c.raws {
		for _, l := range strings.Split(string(r), "\n") {
			if s, ok := strings.CutPrefix(l, "Subject: "); ok {
				subjects = append(subjects, strings.TrimSpace(s))
			}
		}
	}
	want := "cur,new,a,b,mb"
	// Issue 11: replay no longer judges what is mail. The empty file and the
	// binary blob are delivered (the pipeline publishes what the parser
	// makes of them, a failed event for the empty one); only unreadable
	// files fail.
	wantBad := map[string]string{"unreadable.eml": "permission denied", "gone.eml": "no such file"}
	wantItems := 7
	if os.Geteuid() == 0 { // root reads anything
		delete(wantBad, "unreadable.eml")
		want = "cur,new,a,b,u,mb"
		wantItems = 8
	}
	if len(c.items) != wantItems {
		t.Errorf("delivered %d messages, want %d", len(c.items), wantItems)
	}
	for i, it := range c.items {
		switch filepath.Base(it.File) {
		case "empty.eml":
			if len(c.raws[i]) != 0 {
				t.Errorf("empty.eml delivered %q", c.raws[i])
			}
		case "blob.bin":
			if !bytes.HasPrefix(c.raws[i], []byte("\x89PNG\r\n\x1a\r\n")) {
				t.Errorf("blob.bin delivered %q", c.raws[i])
			}
		}
	}
	if got := strings.Join(subjects, ","); got != want {
		t.Errorf("replayed %s, want %s", got, want)
	}
	if len(res.Failures) != len(wantBad) {
		t.Errorf("Failures = %v, want %d", res.Failures, len(wantBad))
	}
	for _, f := range res.Failures {
		w, ok := wantBad[filepath.Base(f.Pos)]
		if !ok || !strings.Contains(f.Err.Error(), w) {
			t.Errorf("failure %v, want one of %v", f, wantBad)
		}
	}
	if !strings.Contains(progress.String(), "messages") {
		t.Errorf("no progress line: %q", progress.String())
	}
}

func TestMaildirForcedAndErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := NewPlan([]string{dir}, FormatMaildir); err == nil {
		t.Error("NewPlan(maildir) of a plain dir: no error")
	}
	if _, err := NewPlan([]string{filepath.Join(dir, "missing")}, FormatAuto); err == nil {
		t.Error("NewPlan(missing): no error")
	}
	writeFile(t, filepath.Join(dir, "cur", "1"), msg("one", "1\n", "\n"))
	writeFile(t, filepath.Join(dir, "new", "2"), msg("two", "2\n", "\n"))
	plan, err := NewPlan([]string{dir}, FormatAuto)
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Sources) != 1 || plan.Sources[0].Format != FormatMaildir || plan.Messages != 2 {
		t.Fatalf("plan = %+v, want one Maildir with 2 messages", plan)
	}
	path := filepath.Join(dir, "notmbox")
	writeFile(t, path, "just text\n")
	_, res, err := replayAll(t, []string{path}, FormatMbox)
	if !errors.Is(err, ErrFailures) || len(res.Failures) != 1 || !errors.Is(res.Failures[0].Err, ErrBadMessage) {
		t.Errorf("forced mbox of a text file: err %v, failures %v", err, res.Failures)
	}
}

// countTarget counts messages without keeping them.
type countTarget struct {
	n     int
	bytes int64
	peak  uint64
}

func (c *countTarget) Put(_ context.Context, it *Item) error {
	n, err := io.Copy(io.Discard, it.Body.Open())
	c.n++
	c.bytes += n
	if c.n%100 == 0 {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		c.peak = max(c.peak, ms.HeapInuse)
	}
	return err
}

// TestMboxStreaming replays a generated 50 MB mbox (with one 8 MB message
// that spills to a spool file) and checks the heap stays far below the file
// size.
func TestMboxStreaming(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 50 MB")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "big.mbox")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	line := strings.Repeat("abcdefghij", 7) + "\n"
	body := strings.Repeat(line, 100) // ~7 KB
	const size = 50 << 20
	var written, lines int64
	n := 0
	for written < size {
		n++
		b := body
		if n == 1000 {
			b = strings.Repeat(line, 8<<20/len(line))
		}
		m := msg(fmt.Sprint("m", n), b, "\n")
		lines += int64(strings.Count(m, "\n"))
		s := fmt.Sprintf("From x Tue Nov 25 06:00:00 2026\n%s\n", m)
		k, err := f.WriteString(s)
		if err != nil {
			t.Fatal(err)
		}
		written += int64(k)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	plan, err := NewPlan([]string{path}, FormatAuto)
	if err != nil {
		t.Fatal(err)
	}
	c := &countTarget{}
	res, err := Run(context.Background(), plan, Options{Target: c, Read: ReadOptions{SpoolDir: dir, MemLimit: 1 << 20}})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if c.n != n || res.Replayed != n {
		t.Errorf("replayed %d (target saw %d), want %d", res.Replayed, c.n, n)
	}
	// Each message loses its separator line and the blank line after it,
	// and every line gains a CR.
	if want := written - int64(n)*int64(len("From x Tue Nov 25 06:00:00 2026\n\n")) + lines; c.bytes != want {
		t.Errorf("bytes = %d, want %d", c.bytes, want)
	}
	growth := int64(c.peak) - int64(before.HeapInuse)
	t.Logf("mbox %d MB, %d messages, heap in use before %d KB, peak sample %d KB (growth %d KB)",
		written>>20, n, before.HeapInuse>>10, c.peak>>10, growth>>10)
	if growth > 16<<20 {
		t.Errorf("heap grew by %d MB while streaming a %d MB mbox", growth>>20, written>>20)
	}
}

func TestCRLFWriter(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want string
	}{
		{[]string{"a\nb\n"}, "a\r\nb\r\n"},
		{[]string{"a\r\nb\r\n"}, "a\r\nb\r\n"},
		{[]string{"a\r", "\nb\n", "\n"}, "a\r\nb\r\n\r\n"},
		{[]string{"\n", "x\r", "y\n"}, "\r\nx\ry\r\n"},
		{[]string{"no newline"}, "no newline"},
	} {
		var b bytes.Buffer
		w := &crlfWriter{w: &b}
		for _, p := range tc.in {
			if n, err := w.Write([]byte(p)); n != len(p) || err != nil {
				t.Fatalf("Write(%q) = %d, %v", p, n, err)
			}
		}
		if b.String() != tc.want {
			t.Errorf("crlfWriter(%q) = %q, want %q", tc.in, b.String(), tc.want)
		}
	}
}

// TestMboxUnquotedFrom: a "From " line that does not follow a blank line
// is message text (mboxo writers leave such lines unquoted), and a file
// starting with junk before the first separator loses only the junk.
func TestMboxUnquotedFrom(t *testing.T) {
	m1 := "Subject: a\n\nline\nFrom me to you\n"
	m2 := "Subject: b\n\nbody\n"
	path := filepath.Join(t.TempDir(), "box")
	writeFile(t, path, "From x\n"+m1+"\nFrom y\n"+m2)
	c, res, err := replayAll(t, []string{path}, FormatMbox)
	if err != nil {
		t.Fatalf("Run: %v %v", err, res.Failures)
	}
	crlf := func(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }
	if len(c.raws) != 2 || string(c.raws[0]) != crlf(m1) || string(c.raws[1]) != crlf(m2) {
		t.Errorf("messages = %q, want %q and %q", c.raws, crlf(m1), crlf(m2))
	}
}

// FuzzMbox checks that any input is read without panicking, that every
// message is accounted for, and that nothing grows beyond CRLF expansion.
func FuzzMbox(f *testing.F) {
	f.Add([]byte("From x\nSubject: a\n\n>From b\n\nFrom y\nSubject: b\n\nc"))
	f.Add([]byte("From \r\n\r\nFrom \r\n"))
	f.Add([]byte("junk\n\nFrom x\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "box")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		plan, err := NewPlan([]string{path}, FormatMbox)
		if err != nil {
			t.Fatal(err)
		}
		c := &collect{}
		var read int64
		res, err := Run(context.Background(), plan, Options{Target: c, Read: ReadOptions{MemLimit: 64, SpoolDir: t.TempDir(), Progress: func(n int64) { read += n }}})
		if err != nil && !errors.Is(err, ErrFailures) {
			t.Fatalf("Run: %v", err)
		}
		if read != int64(len(data)) {
			t.Errorf("progress reported %d bytes of %d", read, len(data))
		}
		if res.Bytes > 2*int64(len(data)) {
			t.Errorf("delivered %d bytes from %d", res.Bytes, len(data))
		}
		if res.Replayed != len(c.raws) {
			t.Errorf("Replayed %d, target got %d", res.Replayed, len(c.raws))
		}
	})
}

// TestReplayAcceptsWhatTheParserAccepts is issue 11's finding 3: files
// that start with an mbox "From " line (in a Maildir, in a directory of
// .eml files, or forced as eml), with LF or CRLF, and a banner line before
// the header are all delivered, one message each. The "From " line is
// dropped wherever it is met, so the same message gives the same bytes
// (and so the same event id) from a Maildir, a directory and an mbox.
func TestReplayAcceptsWhatTheParserAccepts(t *testing.T) {
	dir := t.TempDir()
	const fromLine = "From customer@example.org Tue Nov 24 10:00:00 2026"
	plain := map[string]string{}
	for i, nl := range []string{"\n", "\r\n", "\n"} {
		m := msg(fmt.Sprintf("m%d", i), "body "+fmt.Sprint(i)+"\n", nl)
		plain[fmt.Sprintf("m%d", i)] = strings.ReplaceAll(strings.ReplaceAll(m, "\r\n", "\n"), "\n", "\r\n")
		writeFile(t, filepath.Join(dir, "Maildir", []string{"cur", "new", "cur"}[i], fmt.Sprintf("%d.host:2,", i)), fromLine+nl+m)
		writeFile(t, filepath.Join(dir, "emls", fmt.Sprintf("%d.eml", i)), fromLine+nl+m)
	}
	if err := os.MkdirAll(filepath.Join(dir, "Maildir", "tmp"), 0o755); err != nil {
		t.Fatal(err)
	}
	banner := "---- Original email message ----\n" + msg("banner", "b\n", "\n")
	writeFile(t, filepath.Join(dir, "banner.eml"), banner)

	for _, tc := range []struct {
		name   string
		paths  []string
		format Format
		want   int
	}{
		{"maildir", []string{filepath.Join(dir, "Maildir")}, FormatAuto, 3},
		{"dir of eml", []string{filepath.Join(dir, "emls")}, FormatAuto, 3},
		{"forced eml", []string{filepath.Join(dir, "emls", "0.eml"), filepath.Join(dir, "emls", "1.eml")}, FormatEML, 2},
		{"forced maildir", []string{filepath.Join(dir, "Maildir")}, FormatMaildir, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, res, err := replayAll(t, tc.paths, tc.format)
			if err != nil || len(c.raws) != tc.want || res.Replayed != tc.want {
				t.Fatalf("replayed %d (%v), err %v; want %d", len(c.raws), res.Failures, err, tc.want)
			}
			for i, raw := range c.raws {
				subj := ""
				for _, l := range strings.Split(string(raw), "\r\n") {
					if s, ok := strings.CutPrefix(l, "Subject: "); ok {
						subj = s
					}
				}
				if want, ok := plain[subj]; !ok || string(raw) != want {
					t.Errorf("message %d (%s): delivered %q, want the message without its From line, CRLF: %q", i, subj, raw, want)
				}
				if got := c.items[i].Date; !got.Equal(time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)) {
					t.Errorf("message %d: date %v, want the From line's", i, got)
				}
			}
		})
	}

	c, res, err := replayAll(t, []string{filepath.Join(dir, "banner.eml")}, FormatAuto)
	if err != nil || res.Replayed != 1 {
		t.Fatalf("banner: %v %v", err, res.Failures)
	}
	if want := strings.ReplaceAll(banner, "\n", "\r\n"); string(c.raws[0]) != want {
		t.Errorf("banner file delivered %q, want it as it is (CRLF): %q", c.raws[0], want)
	}
	if want := time.Date(2026, 11, 25, 6, 0, 0, 0, time.UTC); !c.items[0].Date.Equal(want) {
		t.Errorf("banner file: date %v, want the Date header's %v", c.items[0].Date, want)
	}
}
