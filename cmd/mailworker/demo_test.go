package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mailworker/mailworker/publisher"
)

// demoEvents decodes the demo's stdout: one event per line.
func demoEvents(t *testing.T, out string) []publisher.Event {
	t.Helper()
	var evs []publisher.Event
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var ev publisher.Event
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("demo printed a line that is not an event: %q: %v", line, err)
		}
		if ev.Schema != publisher.SchemaV1 || ev.Server != "demo" || ev.Mailbox != demoAddress {
			t.Errorf("event envelope = %s/%s/%s", ev.Schema, ev.Server, ev.Mailbox)
		}
		evs = append(evs, ev)
	}
	return evs
}

// checkDemoSamples checks the ten built-in samples' events: distinct ids
// and the kinds the samples are written to produce.
func checkDemoSamples(t *testing.T, evs []publisher.Event, out string) {
	t.Helper()
	kinds := map[publisher.Kind]int{}
	ids := map[string]bool{}
	for _, ev := range evs {
		ids[ev.ID] = true
		kinds[ev.Kind]++
	}
	if len(ids) != 10 {
		t.Fatalf("got %d distinct events; want 10\n%s", len(ids), out)
	}
	// 02 carries [Request ID :##123##]; 04 is an out-of-office; 05 a bounce.
	if kinds[publisher.KindReply] < 1 || kinds[publisher.KindAutoReply] < 1 || kinds[publisher.KindBounce] != 1 || kinds[publisher.KindNewRequest] < 5 {
		t.Errorf("kinds = %v", kinds)
	}
}

// TestDemo runs the README's first command in process, without --samples:
// the demo seeds its IMAPS server with the sample mail built into the
// binary and prints one event per message, and tells how to replay more
// mail into it (naming a directory that exists).
func TestDemo(t *testing.T) {
	data := t.TempDir()
	code, out, errOut := cli(t, nil, "demo", "--data-dir", data, "--max-events", "10")
	if code != 0 {
		t.Fatalf("demo exit %d\n%s", code, errOut)
	}
	checkDemoSamples(t, demoEvents(t, out), out)
	if !strings.Contains(errOut, "replay --to imaps://demo@127.0.0.1:") {
		t.Errorf("the demo did not print how to replay into it:\n%s", errOut)
	}
	written, _ := filepath.Glob(filepath.Join(data, "samples", "*.eml"))
	if len(written) != 10 || !strings.Contains(errOut, filepath.Join(data, "samples")) {
		t.Errorf("the replay hint should name the %d samples written to %s:\n%s", len(written), filepath.Join(data, "samples"), errOut)
	}
}

// TestDemoSamplesFlag: --samples DIR replaces the built-in mail.
func TestDemoSamplesFlag(t *testing.T) {
	dir := t.TempDir()
	for i, subj := range []string{"first own sample", "second own sample"} {
		msg := "From: a@example.org\nTo: support@example.com\nSubject: " + subj + "\nMessage-ID: <own-" + string(rune('a'+i)) + "@example.org>\n\nhello\n"
		if err := os.WriteFile(filepath.Join(dir, string(rune('a'+i))+".eml"), []byte(msg), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	code, out, errOut := cli(t, nil, "demo", "--samples", dir, "--data-dir", t.TempDir(), "--max-events", "2")
	if code != 0 {
		t.Fatalf("demo exit %d\n%s", code, errOut)
	}
	evs := demoEvents(t, out)
	if len(evs) != 2 || evs[0].Message == nil || evs[1].Message == nil ||
		evs[0].Subject+"|"+evs[1].Subject != "first own sample|second own sample" {
		t.Fatalf("events:\n%s", out)
	}
	if !strings.Contains(errOut, "seeded 2 sample messages") {
		t.Errorf("stderr:\n%s", errOut)
	}
	if code, _, errOut := cli(t, nil, "demo", "--samples", t.TempDir(), "--max-events", "1"); code != 1 || !strings.Contains(errOut, "no .eml files") {
		t.Errorf("empty --samples dir: exit %d, %q", code, errOut)
	}
}

// TestDemoBinaryFromEmptyDir is issue 11's finding 2: the built binary,
// run from an empty directory (as an installed binary or `go run
// module@version` is), prints the sample events. The demo's NATS listens on
// a free loopback port, so a NATS server already on 4222 does not matter.
func TestDemoBinaryFromEmptyDir(t *testing.T) {
	bin := mailworkerBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "demo", "--max-events", "10")
	cmd.Dir = t.TempDir()
	cmd.Env = cleanEnv(map[string]string{"TMPDIR": t.TempDir()})
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("demo: %v\n%s", err, stderr.String())
	}
	checkDemoSamples(t, demoEvents(t, stdout.String()), stdout.String())
	m := regexp.MustCompile(`NATS\s+nats://127\.0\.0\.1:(\d+)\s`).FindStringSubmatch(stderr.String())
	if m == nil || m[1] == "4222" {
		t.Errorf("the demo's NATS should listen on a free loopback port, not the standard one:\n%s", stderr.String())
	}
	if ents, _ := os.ReadDir(cmd.Dir); len(ents) != 0 {
		t.Errorf("the demo wrote into the current directory: %v", ents)
	}
}

// cleanEnv is the test process's environment without MAILWORKER_*
// variables (a developer's own settings must not leak into a user's
// path), plus extra.
func cleanEnv(extra map[string]string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "MAILWORKER_") || extra[k] != "" {
			continue
		}
		env = append(env, kv)
	}
	for k, v := range extra {
		env = append(env, k+"="+v)
	}
	return env
}
