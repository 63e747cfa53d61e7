package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"

	"github.com/mailworker/mailworker/imaptest"
)

// TestTestConnectionAndStatus drives the admin verbs against an
// in-process IMAPS server: test-connection logs in, reports the folder and
// parses the oldest message without changing anything; run --once fetches;
// status then shows the counts.
func TestTestConnectionAndStatus(t *testing.T) {
	const pw = "Tc-pass-9f1"
	m := imaptest.StartMem(t, imaptest.MemOptions{Users: map[string]string{"alice": pw}})
	m.Append(t, "alice", "INBOX", []byte("From: Old Customer <old@example.org>\r\nSubject: The oldest one\r\nMessage-ID: <old@example.org>\r\n\r\nhello\r\n"))
	m.Append(t, "alice", "INBOX", []byte("From: new@example.org\r\nSubject: Newer\r\nMessage-ID: <new@example.org>\r\n\r\nhi\r\n"), imap.FlagSeen)
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "mailworker.yaml")
	cfg := fmt.Sprintf(`data_dir: %s
admin: {listen: "off"}
nats: {listen: "127.0.0.1:0"} # never the default 4222: a system NATS may hold it
servers:
  - name: support
    protocol: imaps
    host: 127.0.0.1
    port: %d
    tls: {ca_file: %s}
    username: alice
    addresses: [support@example.test]
    auth: {method: password, password_env: TC_PASSWORD}
`, filepath.Join(dir, "data"), m.Port(), m.CAFile())
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"TC_PASSWORD": pw}

	code, out, errOut := cli(t, env, "test-connection", "--config", cfgFile, "--server", "support")
	if code != 0 {
		t.Fatalf("test-connection exit %d\n%s\n%s", code, out, errOut)
	}
	for _, want := range []string{"INBOX: 2 messages, 1 unseen", "pending:       2 messages", "subject:     The oldest one", "kind:        new_request", "OK (nothing was changed"} {
		if !strings.Contains(out, want) {
			t.Errorf("test-connection output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out+errOut, pw) {
		t.Fatal("the password appears in the output")
	}
	for _, msg := range m.Messages(t, "alice", "INBOX") {
		if msg.UID == 1 && msg.Has(imap.FlagSeen) {
			t.Fatal("test-connection marked the sample \\Seen")
		}
	}
	if code, _, errOut := cli(t, env, "test-connection", "--config", cfgFile, "--server", "nope"); code != 2 || !strings.Contains(errOut, "have: support") {
		t.Errorf("unknown server: exit %d, %q", code, errOut)
	}

	if code, _, errOut := cli(t, env, "run", "--once", "--config", cfgFile); code != 0 {
		t.Fatalf("run --once exit %d\n%s", code, errOut)
	}
	code, out, errOut = cli(t, env, "status", "--config", cfgFile)
	if code != 0 {
		t.Fatalf("status exit %d\n%s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[1], "support") {
		t.Fatalf("status output:\n%s", out)
	}
	// SERVER PROTOCOL EVERY LAST-RUN(2 words + "ago") NEXT FETCHED PUBLISHED ...
	f := strings.Fields(lines[1])
	if f[6] != "2" || f[7] != "2" {
		t.Errorf("status shows fetched %s, published %s; want 2 and 2:\n%s", f[6], f[7], out)
	}
}
