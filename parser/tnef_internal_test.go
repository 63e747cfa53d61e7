package parser

import (
	"bytes"
	"testing"

	"github.com/mailworker/mailworker/parser/parsertest"
)

// TestTNEFOverMemoryBound: a winmail.dat over maxTNEFBytes is not decoded
// in memory but kept whole as the attachment it is, with a bad_tnef
// warning.
func TestTNEFOverMemoryBound(t *testing.T) {
	defer func(n int) { maxTNEFBytes = n }(maxTNEFBytes)
	files := parsertest.ManyTNEFFiles(200)
	stream := parsertest.TNEF(files)
	maxTNEFBytes = len(stream) - 1
	m, err := Parse(bytes.NewReader(parsertest.WinmailMessage("big@example.com", files)), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Attachments) != 1 || m.Attachments[0].Filename != "winmail.dat" || m.Attachments[0].Size != int64(len(stream)) {
		t.Fatalf("attachments = %+v", m.Attachments)
	}
	var warned bool
	for _, w := range m.Warnings {
		warned = warned || w.Code == WarnBadTNEF
	}
	if !warned {
		t.Fatalf("no bad_tnef warning: %+v", m.Warnings)
	}
	maxTNEFBytes = len(stream)
	if m, err = Parse(bytes.NewReader(parsertest.WinmailMessage("big@example.com", files)), Options{}); err != nil || len(m.Attachments) != 200 {
		t.Fatalf("at the bound: %d attachments, %v", len(m.Attachments), err)
	}
}
