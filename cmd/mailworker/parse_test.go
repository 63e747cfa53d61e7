package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailworker/mailworker/publisher"
)

func runParseCLI(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	env := &cliEnv{stdin: strings.NewReader(stdin), stdout: &out, stderr: &errb, getenv: func(string) string { return "" }}
	code := runCLI(env, append([]string{"parse"}, args...))
	return code, out.String(), errb.String()
}

func TestParseVerb(t *testing.T) {
	dir := t.TempDir()
	raw := "From mbox@x Sat Apr 15 10:00:00 2023\nFrom: A <a@example.com>\nSubject: [#42] hello\nMessage-ID: <m1@x>\n\nbody\n"
	file := filepath.Join(dir, "m.eml")
	if err := os.WriteFile(file, []byte(raw), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, stderr := runParseCLI(t, raw, file, filepath.Join(dir, "missing.eml"), "-")
	if code != 1 {
		t.Errorf("exit status %d, want 1 (one file missing); stderr %q", code, stderr)
	}
	if !strings.Contains(stderr, "missing.eml") {
		t.Errorf("stderr %q does not name the missing file", stderr)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("got %d JSON lines, want 2:\n%s", len(lines), out)
	}
	sum := sha256.Sum256([]byte(raw))
	for _, l := range lines {
		var ev publisher.Event
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatal(err)
		}
		if ev.Schema != publisher.SchemaV1 || ev.Kind != publisher.KindReply || ev.TicketRef != "42" {
			t.Errorf("event = schema %q kind %q ticket %q", ev.Schema, ev.Kind, ev.TicketRef)
		}
		if ev.Raw.SHA256 != hex.EncodeToString(sum[:]) || ev.Raw.Size != int64(len(raw)) {
			t.Errorf("raw = %+v, want size %d", ev.Raw, len(raw))
		}
		if ev.ID != publisher.EventID("", "", ev.Raw.SHA256) {
			t.Errorf("id %q is not EventID of the raw hash", ev.ID)
		}
		if ev.From == nil || ev.From.Address != "a@example.com" || ev.MessageID != "m1@x" {
			t.Errorf("from %+v message_id %q", ev.From, ev.MessageID)
		}
	}
}

func TestParseVerbUsage(t *testing.T) {
	if code, _, _ := runParseCLI(t, ""); code != 2 {
		t.Errorf("parse without files: exit %d, want 2", code)
	}
	if code, _, stderr := runParseCLI(t, "", "--config", filepath.Join(t.TempDir(), "nope.yaml"), "-"); code != 2 || !strings.Contains(stderr, "nope.yaml") {
		t.Errorf("parse with a missing config: exit %d stderr %q, want 2 naming the file", code, stderr)
	}
	if code, _, stderr := runParseCLI(t, "", "-"); code != 1 || !strings.Contains(stderr, "empty") {
		t.Errorf("parse of empty stdin: exit %d stderr %q, want 1", code, stderr)
	}
}

func TestParseVerbConfig(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "mailworker.yaml")
	if err := os.WriteFile(cfg, []byte("parser:\n  ticket_patterns: [\"CASE-(\\\\d+)\"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, stderr := runParseCLI(t, "Subject: Re: CASE-77 [#5]\n\nhi\n", "--config", cfg, "-")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var ev publisher.Event
	if err := json.Unmarshal([]byte(out), &ev); err != nil {
		t.Fatal(err)
	}
	if ev.TicketRef != "77" {
		t.Errorf("ticket_ref = %q, want 77 (the configured pattern, not the default [#5])", ev.TicketRef)
	}
}

// TestParseVerbMatchesSchema checks the event JSON against
// publisher/schema/event.v1.json: every key printed is described, every
// required key is printed, and the types agree (no JSON Schema validator
// is among the modules; python3 -m jsonschema was used by hand as well).
func TestParseVerbMatchesSchema(t *testing.T) {
	raw, err := os.ReadFile("../../publisher/schema/event.v1.json")
	if err != nil {
		t.Fatal(err)
	}
	var schema struct {
		Required   []string                  `json:"required"`
		Properties map[string]map[string]any `json:"properties"`
		Else       struct {
			Required []string `json:"required"`
		} `json:"else"`
	}
	if err := json.Unmarshal(raw, &schema); err != nil {
		t.Fatalf("schema is not JSON: %v", err)
	}
	files, _ := filepath.Glob("../../parser/testdata/*.eml")
	if len(files) == 0 {
		t.Fatal("no parser/testdata mails")
	}
	code, out, stderr := runParseCLI(t, "", files...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var ev map[string]any
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatal(err)
		}
		for k, v := range ev {
			p, ok := schema.Properties[k]
			if !ok {
				t.Errorf("event key %q is not in the schema", k)
				continue
			}
			if !typeMatches(p, v) {
				t.Errorf("event key %q = %T, schema says %v", k, v, p["type"])
			}
		}
		for _, k := range append(schema.Required, schema.Else.Required...) {
			if _, ok := ev[k]; !ok {
				t.Errorf("required key %q missing from the event", k)
			}
		}
	}
}

func typeMatches(prop map[string]any, v any) bool {
	var types []string
	switch t := prop["type"].(type) {
	case string:
		types = []string{t}
	case []any:
		for _, x := range t {
			types = append(types, x.(string))
		}
	default:
		return true // const, enum, oneOf, $ref: not checked here
	}
	for _, want := range types {
		switch v.(type) {
		case nil:
			if want == "null" {
				return true
			}
		case string:
			if want == "string" {
				return true
			}
		case bool:
			if want == "boolean" {
				return true
			}
		case float64:
			if want == "integer" || want == "number" {
				return true
			}
		case []any:
			if want == "array" {
				return true
			}
		case map[string]any:
			if want == "object" {
				return true
			}
		}
	}
	return false
}

// TestParseVerbServer: --server applies the server's settings, so a mail
// to support+123@ with plus_address_ticket_ref on becomes a reply to 123,
// and Authentication-Results of its trusted authserv-id fill auth.
func TestParseVerbServer(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "mailworker.yaml")
	yaml := `servers:
  - name: support
    protocol: imaps
    host: imap.example.com
    username: support@example.com
    addresses: [support@example.com]
    auth:
      method: password
      password_env: SUPPORT_PW
    plus_address_ticket_ref: true
    trusted_authserv_ids: [mx.example.com]
`
	if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	eml := "../../parser/testdata/plus_ticket.eml"
	raw := "Authentication-Results: mx.example.com; dmarc=pass header.from=customer.example\n" +
		"Authentication-Results: forged.example; dmarc=fail\n" +
		"To: support+123@example.com\nSubject: still broken\n\nhi\n"

	code, out, stderr := runParseCLI(t, raw, "--config", cfg, "--server", "support", eml, "-")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("got %d lines:\n%s", len(lines), out)
	}
	for i, l := range lines {
		var ev publisher.Event
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatal(err)
		}
		if ev.Kind != publisher.KindReply || ev.TicketRef != "123" || ev.TicketRefSource != "plus_address" {
			t.Errorf("line %d: kind %q ticket_ref %q from %q, want reply to 123 from plus_address", i, ev.Kind, ev.TicketRef, ev.TicketRefSource)
		}
		if ev.Server != "support" || ev.Mailbox != "support@example.com" || ev.ID != publisher.EventID("support", "support@example.com", ev.Raw.SHA256) {
			t.Errorf("line %d: server %q mailbox %q id %q", i, ev.Server, ev.Mailbox, ev.ID)
		}
		if ev.OriginalRecipient == nil || ev.OriginalRecipient.Tag != "123" {
			t.Errorf("line %d: original_recipient %+v", i, ev.OriginalRecipient)
		}
	}
	var ev publisher.Event
	json.Unmarshal([]byte(lines[1]), &ev)
	if ev.Auth.DMARC != "pass" || ev.Auth.AuthservID != "mx.example.com" {
		t.Errorf("auth = %+v, want dmarc pass from mx.example.com (forged.example ignored)", ev.Auth)
	}

	// without --server the same mail is a new request: no option applies
	code, out, _ = runParseCLI(t, "", "--config", cfg, eml)
	if err := json.Unmarshal([]byte(out), &ev); code != 0 || err != nil || ev.Kind != publisher.KindNewRequest || ev.TicketRef != "" || ev.Server != "" {
		t.Errorf("without --server: exit %d kind %q ticket_ref %q server %q", code, ev.Kind, ev.TicketRef, ev.Server)
	}
	if code, _, stderr := runParseCLI(t, "", "--config", cfg, "--server", "nope", eml); code != 2 || !strings.Contains(stderr, `"nope"`) {
		t.Errorf("unknown server: exit %d stderr %q, want 2 naming it", code, stderr)
	}
}
