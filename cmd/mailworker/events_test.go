package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailworker/mailworker/fetcher"
	"github.com/mailworker/mailworker/publisher"
	"github.com/mailworker/mailworker/spool"
	"github.com/mailworker/mailworker/worker"
)

// writeEmbeddedConfig writes a configuration without nats.url (embedded
// server) and one server, helpdesk.
func writeEmbeddedConfig(t *testing.T) (path, dataDir string) {
	t.Helper()
	dir := t.TempDir()
	dataDir = filepath.Join(dir, "data")
	path = filepath.Join(dir, "mailworker.yaml")
	y := fmt.Sprintf(`data_dir: %s
admin:
  listen: "off"
servers:
  - name: helpdesk
    protocol: imaps
    host: 127.0.0.1
    username: alice
    addresses: [support@example.com]
    auth:
      method: password
      password_env: HELPDESK_PASSWORD
`, dataDir)
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, dataDir
}

// eventsCLI runs mailworker in process and returns exit status, stdout
// and stderr.
func eventsCLI(t *testing.T, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	e := &cliEnv{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, getenv: func(k string) string { return env[k] }}
	code := runCLI(e, args)
	return code, out.String(), errb.String()
}

func eventLines(t *testing.T, out string) []publisher.Event {
	t.Helper()
	var evs []publisher.Event
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l == "" {
			continue
		}
		var ev publisher.Event
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatalf("line %q is not an event: %v", l, err)
		}
		evs = append(evs, ev)
	}
	return evs
}

// TestEventsAndFailedCLI drives `events` and `failed` against a running
// worker's embedded server (found through data_dir/nats.url), then with no
// worker running (the verb starts the embedded server on the store itself).
func TestEventsAndFailedCLI(t *testing.T) {
	path, dataDir := writeEmbeddedConfig(t)
	env := map[string]string{"HELPDESK_PASSWORD": "pw"}
	e := &cliEnv{getenv: func(k string) string { return env[k] }}
	cfg, err := loadConfig(e, path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	w, err := worker.Open(ctx, worker.Options{Config: cfg, Getenv: e.getenv, EmbeddedListen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	sink := w.Pipeline().ForServer(cfg.Servers[0], nil)
	for i, raw := range []string{
		"From: a@cust.com\r\nMessage-ID: <one@cust.com>\r\nSubject: Printer\r\n\r\nbroken\r\n",
		"\r\n", // unparseable: a failed event
	} {
		ack, err := sink.Deliver(ctx, &fetcher.Message{Server: "helpdesk", Folder: "INBOX", Ref: fmt.Sprint("imap:1:", i+1), Body: spool.FromBytes([]byte(raw))})
		if err != nil {
			t.Fatal(err)
		}
		if err := ack.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}

	code, out, stderr := eventsCLI(t, env, "events", "--config", path)
	if evs := eventLines(t, out); code != 0 || len(evs) != 2 {
		t.Fatalf("events = %d, %d events, stderr %s", code, len(evs), stderr)
	}
	code, out, _ = eventsCLI(t, env, "events", "--config", path, "--kind", "failed", "--server", "helpdesk")
	evs := eventLines(t, out)
	if code != 0 || len(evs) != 1 || evs[0].Kind != publisher.KindFailed {
		t.Fatalf("events --kind failed = %d, %+v", code, evs)
	}
	failedID := evs[0].ID
	code, out, _ = eventsCLI(t, env, "events", "--config", path, "--server", "other")
	if code != 0 || out != "" {
		t.Fatalf("events --server other = %d, %q; want nothing", code, out)
	}
	if code, _, _ := eventsCLI(t, env, "events", "--config", path, "--kind", "bogus"); code != 2 {
		t.Fatalf("events --kind bogus = %d, want 2", code)
	}
	code, out, _ = eventsCLI(t, env, "failed", "list", "--config", path)
	if code != 0 || !strings.Contains(out, strings.TrimSuffix(failedID, "-failed")) || !strings.Contains(out, "pending") {
		t.Fatalf("failed list = %d, %q", code, out)
	}

	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dataDir, publisher.URLFile)); !os.IsNotExist(err) {
		t.Fatalf("nats.url left after the worker stopped: %v", err)
	}
	// Simulate a parser fix, then retry with no worker running.
	if err := os.WriteFile(filepath.Join(dataDir, evs[0].Raw.Object), []byte("From: b@cust.com\r\nMessage-ID: <two@cust.com>\r\nSubject: Fixed\r\n\r\nok\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, stderr = eventsCLI(t, env, "failed", "retry", "--config", path, failedID)
	if code != 0 || !strings.Contains(out, "published new_request") {
		t.Fatalf("failed retry = %d, %q, stderr %s", code, out, stderr)
	}
	code, out, stderr = eventsCLI(t, env, "events", "--config", path, "--kind", "request")
	evs = eventLines(t, out)
	if code != 0 || len(evs) != 2 || evs[1].ID != strings.TrimSuffix(failedID, "-failed") || evs[1].MessageID != "two@cust.com" {
		t.Fatalf("events --kind request after retry = %d, %+v, stderr %s", code, evs, stderr)
	}
}

// lockedBuffer is a bytes.Buffer safe for one writer and one reader.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestEventsFollow: --follow prints the stored events, then new ones as
// they are published, until its context ends.
func TestEventsFollow(t *testing.T) {
	path, _ := writeEmbeddedConfig(t)
	getenv := func(k string) string { return map[string]string{"HELPDESK_PASSWORD": "pw"}[k] }
	cfg, err := loadConfig(&cliEnv{getenv: getenv}, path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	w, err := worker.Open(ctx, worker.Options{Config: cfg, Getenv: getenv, EmbeddedListen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	publish := func(id string) {
		t.Helper()
		ev := &publisher.Event{Schema: publisher.SchemaV1, ID: id, Kind: publisher.KindReply, Server: "helpdesk"}
		if _, err := w.Publisher().Publish(ctx, w.Publisher().Subject("helpdesk", publisher.SubjectReply), ev); err != nil {
			t.Fatal(err)
		}
	}
	publish("stored")
	var out lockedBuffer
	env := &cliEnv{stdout: &out, stderr: &out, getenv: getenv}
	fctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- printEvents(fctx, env, cfg, "helpdesk", "reply", true, slog.New(slog.DiscardHandler))
	}()
	waitOutput := func(want string) {
		t.Helper()
		for !strings.Contains(out.String(), want) {
			select {
			case err := <-done:
				t.Fatalf("events --follow ended early: %v; output %q", err, out.String())
			case <-ctx.Done():
				t.Fatalf("no %q in output %q", want, out.String())
			case <-time.After(10 * time.Millisecond): // polling interval
			}
		}
	}
	waitOutput(`"id":"stored"`)
	publish("live")
	waitOutput(`"id":"live"`)
	stop()
	if err := <-done; err != nil {
		t.Fatalf("events --follow after cancel = %v", err)
	}
	if evs := eventLines(t, out.String()); len(evs) != 2 {
		t.Fatalf("printed %d events, want 2", len(evs))
	}
}
