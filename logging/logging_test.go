package logging

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestServerDebugLogger(t *testing.T) {
	var buf bytes.Buffer
	f, err := New(Options{Writer: &buf, Level: "info", Format: "json"})
	if err != nil {
		t.Fatal(err)
	}
	f.Logger().Debug("hidden")
	f.Server("quiet", false).Debug("hidden too")
	f.Server("loud", true).Debug("transcript line", "uid", 7)
	f.Logger().Info("visible")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("got %d lines, want 2:\n%s", len(lines), buf.String())
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil {
		t.Fatal(err)
	}
	if rec["msg"] != "transcript line" || rec["server"] != "loud" || rec["level"] != "DEBUG" {
		t.Errorf("debug record = %v", rec)
	}
}

func TestBadOptions(t *testing.T) {
	if _, err := New(Options{Level: "verbose"}); err == nil {
		t.Error("level verbose accepted")
	}
	if _, err := New(Options{Format: "xml"}); err == nil {
		t.Error("format xml accepted")
	}
	var buf bytes.Buffer
	f, err := New(Options{Writer: &buf})
	if err != nil {
		t.Fatal(err)
	}
	f.Logger().Info("x")
	if !strings.HasPrefix(buf.String(), "{") {
		t.Errorf("a buffer is not a terminal, but auto format is %q; want JSON", buf.String())
	}
}
