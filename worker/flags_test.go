package worker

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mailworker/mailworker/config"
	"github.com/mailworker/mailworker/imaptest"
	"github.com/mailworker/mailworker/storage/storagetest"
)

func memServer(name string, m *imaptest.MemServer) config.Server {
	s := config.Server{
		Name: name, Protocol: config.ProtocolIMAPS, Host: "127.0.0.1", Port: m.Port(),
		TLS:      config.TLS{CAFile: m.CAFile()},
		Username: testUser, Addresses: []string{"support@example.test"},
		Auth:          config.Auth{Method: config.AuthPassword, PasswordEnv: passwordEnv},
		FetchInterval: config.Duration(time.Hour),
	}
	s.SetDefaults()
	return s
}

func mail(from, subject, extra string) []byte {
	return []byte(fmt.Sprintf("From: %s\r\nTo: support@example.test\r\nSubject: %s\r\nMessage-ID: <%d.%s>\r\n%sDate: Tue, 03 Nov 2026 10:00:00 +0000\r\n\r\nBody of %s\r\n",
		from, subject, time.Now().UnixNano(), strings.ReplaceAll(from, "@", "."), extra, subject))
}

// TestDisableNewRequestsAndEmailDebug: a server with disable_new_requests
// publishes replies on reply and new mail only on suppressed (unless the
// sender is allowed); with email_debug it logs its transcript and
// decisions, and the password appears in no log line.
func TestDisableNewRequestsAndEmailDebug(t *testing.T) {
	m := imaptest.StartMem(t, imaptest.MemOptions{Users: map[string]string{testUser: testPassword}})
	m.Append(t, testUser, "INBOX", mail("new.customer@example.org", "My screen is broken", ""))
	m.Append(t, testUser, "INBOX", mail("known.customer@example.org", "Re: [Request ID :##42##] : Screen", ""))
	m.Append(t, testUser, "INBOX", mail("boss@partner.example", "Please open a ticket", ""))
	m.Append(t, testUser, "INBOX", mail("ooo@example.org", "Out of office", "Auto-Submitted: auto-replied\r\n"))

	srv := memServer("helpdesk", m)
	srv.DisableNewRequests = true
	srv.NewRequestAllow = []string{"*@partner.example"}
	srv.EmailDebug = true
	b := startBroker(t)
	var logs logBuffer
	w := openWorker(t, testConfig(t, storagetest.Drivers[0], b.url(), srv), &logs)
	defer w.Close()
	if err := w.RunOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{} // sender -> subject
	for _, ev := range b.events(t) {
		got[ev.From.Address] = string(ev.Kind) // events() stores the subject in Kind
	}
	want := map[string]string{
		"new.customer@example.org":   "mail.helpdesk.suppressed",
		"known.customer@example.org": "mail.helpdesk.reply",
		"boss@partner.example":       "mail.helpdesk.request",
		"ooo@example.org":            "mail.helpdesk.auto",
	}
	for from, subj := range want {
		if got[from] != subj {
			t.Errorf("mail from %s went to %q; want %q", from, got[from], subj)
		}
	}
	out := logs.String()
	if strings.Contains(out, testPassword) {
		t.Fatalf("the password appears in the logs")
	}
	for _, want := range []string{"UID FETCH", "suppressed"} {
		if !strings.Contains(out, want) {
			t.Errorf("email_debug logs lack %q:\n%s", want, out)
		}
	}
	sts, err := w.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if r := sts[0].Run; r == nil || r.Suppressed != 1 {
		t.Errorf("status run = %+v; want 1 suppressed", sts[0].Run)
	}
}

// TestRunReloadsConfigFile drives a real `mailworker run`: a server added
// to the file is fetched without a restart, an invalid edit is rejected
// while the old configuration keeps running, and SIGTERM stops it cleanly.
func TestRunReloadsConfigFile(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildBinary(t)
	m := imaptest.StartMem(t, imaptest.MemOptions{Users: map[string]string{testUser: testPassword, "bob": testPassword}})
	m.Append(t, testUser, "INBOX", mail("a@example.org", "For alice", ""))
	m.Append(t, "bob", "INBOX", mail("b@example.org", "For bob", ""))
	b := startBroker(t)
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "mailworker.yaml")
	server := func(name, user string) string {
		return fmt.Sprintf(`  - name: %s
    protocol: imaps
    host: 127.0.0.1
    port: %d
    tls: {ca_file: %s}
    username: %s
    auth: {method: password, password_env: %s}
    fetch_interval: 10m
`, name, m.Port(), m.CAFile(), user, passwordEnv)
	}
	head := fmt.Sprintf("data_dir: %s\nnats: {url: %s}\nadmin: {listen: \"off\"}\nlog: {format: json}\nservers:\n", filepath.Join(dir, "data"), b.url())
	write := func(s string) {
		t.Helper()
		// Write then rename, as editors do.
		tmp := cfgFile + ".tmp"
		if err := os.WriteFile(tmp, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, cfgFile); err != nil {
			t.Fatal(err)
		}
	}
	write(head + server("alice", testUser))
	cmd := exec.Command(bin, "run", "--config", cfgFile)
	cmd.Env = append(os.Environ(), passwordEnv+"="+testPassword)
	var out logBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	waitFor(t, 30*time.Second, "alice's mail", func() bool { return b.count(t) == 1 })

	write(head + server("alice", testUser) + "  - name: Bad Name!\n    protocol: imaps\n")
	waitFor(t, 10*time.Second, "the reload to be rejected", func() bool { return strings.Contains(out.String(), "reload rejected") })

	write(head + server("alice", testUser) + server("bob", "bob"))
	waitFor(t, 30*time.Second, "bob's mail after the reload", func() bool { return b.count(t) == 2 })

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run exited with %v after SIGTERM\n%s", err, out.String())
		}
	case <-time.After(40 * time.Second):
		t.Fatal("run did not stop after SIGTERM")
	}
	if strings.Contains(out.String(), testPassword) {
		t.Fatal("the password appears in the logs")
	}
}

// buildBinary builds cmd/mailworker once per test binary run.
func buildBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "mailworker-bin-*")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "mailworker")
		out, err := exec.Command("go", "build", "-o", binPath, "../cmd/mailworker").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}
