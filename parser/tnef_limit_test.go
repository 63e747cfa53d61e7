package parser_test

import (
	"bytes"
	"testing"

	"github.com/mailworker/mailworker/parser"
	"github.com/mailworker/mailworker/parser/parsertest"
)

// TestTNEFCountsTowardMaxParts: the files of a winmail.dat count as MIME
// parts, so a stream with thousands of tiny files is bounded by MaxParts
// (with a too_many_parts warning), and one under the limit is expanded
// whole.
func TestTNEFCountsTowardMaxParts(t *testing.T) {
	raw := parsertest.WinmailMessage("tnef5000@example.com", parsertest.ManyTNEFFiles(5000))
	m, err := parser.Parse(bytes.NewReader(raw), parser.Options{MaxParts: 1000})
	if err != nil {
		t.Fatal(err)
	}
	// parts: multipart/mixed, text/plain, then the files in place of winmail.dat
	if got, want := len(m.Attachments), 1000-2; got != want {
		t.Errorf("attachments = %d, want %d", got, want)
	}
	if !hasWarning(m, parser.WarnTooManyParts) {
		t.Errorf("no %s warning: %+v", parser.WarnTooManyParts, m.Warnings)
	}
	if m.Attachments[0].Filename != "file00001.txt" || m.Attachments[len(m.Attachments)-1].Filename != "file00998.txt" {
		t.Errorf("first/last = %s/%s", m.Attachments[0].Filename, m.Attachments[len(m.Attachments)-1].Filename)
	}

	small := parsertest.WinmailMessage("tnef10@example.com", parsertest.ManyTNEFFiles(10))
	m, err = parser.Parse(bytes.NewReader(small), parser.Options{MaxParts: 12})
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Attachments) != 10 || hasWarning(m, parser.WarnTooManyParts) {
		t.Errorf("10 files under a limit of 12 parts: %d attachments, warnings %+v", len(m.Attachments), m.Warnings)
	}
	m, err = parser.Parse(bytes.NewReader(small), parser.Options{MaxParts: 11})
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Attachments) != 9 || !hasWarning(m, parser.WarnTooManyParts) {
		t.Errorf("10 files over a limit of 11 parts: %d attachments, warnings %+v", len(m.Attachments), m.Warnings)
	}
}

func hasWarning(m *parser.Message, code string) bool {
	for _, w := range m.Warnings {
		if w.Code == code {
			return true
		}
	}
	return false
}
