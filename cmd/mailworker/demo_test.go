package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailworker/mailworker/publisher"
)

// TestDemo runs the README's first command in process: the demo seeds its
// IMAPS server with testdata/mail and prints one event per message, with
// the kinds the samples are written to produce.
func TestDemo(t *testing.T) {
	code, out, errOut := cli(t, nil, "demo", "--samples", filepath.Join("..", "..", "testdata", "mail"),
		"--data-dir", t.TempDir(), "--max-events", "10")
	if code != 0 {
		t.Fatalf("demo exit %d\n%s", code, errOut)
	}
	kinds := map[publisher.Kind]int{}
	ids := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var ev publisher.Event
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("demo printed a line that is not an event: %q: %v", line, err)
		}
		if ev.Schema != publisher.SchemaV1 || ev.Server != "demo" || ev.Mailbox != demoAddress {
			t.Errorf("event envelope = %s/%s/%s", ev.Schema, ev.Server, ev.Mailbox)
		}
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
	if !strings.Contains(errOut, "replay --to imaps://demo@127.0.0.1:") {
		t.Errorf("the demo did not print how to replay into it:\n%s", errOut)
	}
}
