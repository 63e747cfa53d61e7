package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mailworker/mailworker/config"
	"github.com/mailworker/mailworker/fetcher"
	"github.com/mailworker/mailworker/imaptest"
	"github.com/mailworker/mailworker/logging"
	"github.com/mailworker/mailworker/pipeline"
	"github.com/mailworker/mailworker/publisher"
	"github.com/mailworker/mailworker/replay"
	"github.com/mailworker/mailworker/secret"
	"github.com/mailworker/mailworker/worker"
)

// cli runs mailworker in process with getenv env and returns exit status,
// stdout and stderr.
func cli(t *testing.T, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	e := &cliEnv{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, getenv: func(k string) string { return env[k] }}
	code := runCLI(e, args)
	return code, out.String(), errb.String()
}

// quietLogs discards the worker's logs.
func quietLogs(t *testing.T) *logging.Factory {
	t.Helper()
	l, err := logging.New(logging.Options{Writer: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// replayNATSServer runs a JetStream server on a free port for the test.
func replayNATSServer(t *testing.T) *server.Server {
	t.Helper()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	return ns
}

// replaySamples returns the sample messages as replay delivers them (CRLF).
func replaySamples(t *testing.T) map[string][]byte {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(samplesDir, "*.eml"))
	if err != nil || len(files) != 10 {
		t.Fatalf("samples: %v (%d files)", err, len(files))
	}
	out := map[string][]byte{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(f)] = bytes.ReplaceAll(bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n")), []byte("\n"), []byte("\r\n"))
	}
	return out
}

func sha256Hex(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// replayStreamIDs returns the Nats-Msg-Id of every message in the MAIL stream.
func replayStreamIDs(t *testing.T, url string) []string {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, "MAIL")
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for seq := info.State.FirstSeq; seq > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("get msg %d: %v", seq, err)
		}
		ids = append(ids, m.Header.Get(jetstream.MsgIDHeader))
	}
	return slices.Sorted(slices.Values(ids))
}

// writeReplayConfig writes a configuration with one server, helpdesk, whose IMAP
// endpoint is host:port (unused by direct replays).
func writeReplayConfig(t *testing.T, natsURL, host string, port int, caFile string) string {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "mailworker.yaml")
	y := fmt.Sprintf(`data_dir: %s
database:
  driver: sqlite
  dsn: %s
nats:
  url: %s
  stream: MAIL
  subject_prefix: mail
admin:
  listen: "off"
servers:
  - name: helpdesk
    protocol: imaps
    host: %s
    port: %d
    username: alice
    addresses: [Support@Example.com]
    folder: INBOX
    tls:
      ca_file: %s
    auth:
      method: password
      password_env: HELPDESK_PASSWORD
`, filepath.Join(dir, "data"), filepath.Join(dir, "data", "mailworker.db"), natsURL, host, port, caFile)
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestReplayDirect replays the samples as a directory, an mbox (with
// mboxrd quoting) and a Maildir: each message is published once with the
// id a fetch of the same bytes gets; replaying again and then fetching the
// same messages from a mailbox through the pipeline publishes nothing new.
func TestReplayDirect(t *testing.T) {
	ns := replayNATSServer(t)
	m := imaptest.StartMem(t, imaptest.MemOptions{})
	cfgPath := writeReplayConfig(t, ns.ClientURL(), "127.0.0.1", m.Port(), m.CAFile())
	env := map[string]string{"HELPDESK_PASSWORD": "secret"}
	raws := replaySamples(t)
	var want []string
	for _, b := range raws {
		want = append(want, publisher.EventID("helpdesk", "support@example.com", sha256Hex(b)))
	}
	slices.Sort(want)

	// 1. The directory.
	code, _, stderr := cli(t, env, "replay", "--config", cfgPath, "--server", "helpdesk", "--progress", "plain", samplesDir)
	if code != 0 {
		t.Fatalf("replay dir: exit %d: %s", code, stderr)
	}
	if got := replayStreamIDs(t, ns.ClientURL()); !slices.Equal(got, want) {
		t.Fatalf("stream ids after replay = %v, want %v", got, want)
	}
	// 2. Again, plus the same messages as an mbox and a Maildir: nothing new.
	dir := t.TempDir()
	var mbox bytes.Buffer
	names := slices.Sorted(func(yield func(string) bool) {
		for n := range raws {
			if !yield(n) {
				return
			}
		}
	})
	for i, n := range names {
		fmt.Fprintf(&mbox, "From sender@example.org Tue Nov 24 10:00:%02d 2026\n", i)
		for _, line := range strings.SplitAfter(strings.ReplaceAll(string(raws[n]), "\r\n", "\n"), "\n") {
			if strings.HasPrefix(strings.TrimLeft(line, ">"), "From ") {
				mbox.WriteString(">") // mboxrd quoting
			}
			mbox.WriteString(line)
		}
		mbox.WriteString("\n")
		md := filepath.Join(dir, "Maildir", []string{"cur", "new"}[i%2])
		if err := os.MkdirAll(md, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(md, fmt.Sprintf("%d.host:2,", i)), raws[n], 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "Maildir", "tmp"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "all.mbox"), mbox.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = cli(t, env, "replay", "--config", cfgPath, "--server", "helpdesk", "--progress", "none",
		samplesDir, filepath.Join(dir, "all.mbox"), filepath.Join(dir, "Maildir"))
	if code != 0 || !strings.Contains(stderr, "replayed 30 messages") {
		t.Fatalf("replay dir+mbox+maildir: exit %d: %s", code, stderr)
	}
	if got := replayStreamIDs(t, ns.ClientURL()); !slices.Equal(got, want) {
		t.Fatalf("stream ids after the second replay = %v, want still %v", got, want)
	}

	// 3. A fetch of the same messages through the pipeline: nothing new.
	for _, n := range names {
		m.Append(t, "alice", "INBOX", raws[n])
	}
	cfg, err := config.LoadWith(cfgPath, config.LoadOptions{Getenv: func(k string) string { return env[k] }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w, err := worker.Open(ctx, worker.Options{Config: cfg, Getenv: func(k string) string { return env[k] }, Logs: quietLogs(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	srv, _ := findServer(cfg, "helpdesk")
	if got := pipeline.Mailbox(srv); got != "support@example.com" {
		t.Fatalf("pipeline.Mailbox = %q", got)
	}
	f, err := fetcher.NewIMAP(srv, fetcher.Deps{Checkpoints: fetcher.NewCheckpoints(w.DB()), Credentials: replay.PasswordCredentials{Secret: secret.New("secret")}})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Fetch(ctx, w.Pipeline().ForServer(srv, nil))
	if err != nil || st.Delivered != 10 {
		t.Fatalf("Fetch = %+v, %v; want 10 delivered", st, err)
	}
	if got := replayStreamIDs(t, ns.ClientURL()); !slices.Equal(got, want) {
		t.Fatalf("stream ids after fetching the replayed messages = %v, want still %v", got, want)
	}
}

func TestReplayDryRun(t *testing.T) {
	code, stdout, stderr := cli(t, nil, "replay", "--dry-run", "--progress", "none", samplesDir)
	if code != 0 {
		t.Fatalf("replay --dry-run: exit %d: %s", code, stderr)
	}
	raws := replaySamples(t)
	kinds := map[string]publisher.Kind{}
	sc := bufio.NewScanner(strings.NewReader(stdout))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var ev publisher.Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		name := filepath.Base(strings.TrimPrefix(ev.Source, "replay:"))
		raw, ok := raws[name]
		if !ok {
			t.Fatalf("event source %q is no sample", ev.Source)
		}
		if want := publisher.EventID(ReplayServerName, "", sha256Hex(raw)); ev.ID != want || ev.Server != ReplayServerName {
			t.Errorf("%s: id %s server %q, want %s %q", name, ev.ID, ev.Server, want, ReplayServerName)
		}
		kinds[name] = ev.Kind
	}
	if len(kinds) != 10 {
		t.Fatalf("dry run printed %d events, want 10:\n%s", len(kinds), stdout)
	}
	for name, want := range map[string]publisher.Kind{
		"01-new-request.eml":      publisher.KindNewRequest,
		"02-reply-ticket-ref.eml": publisher.KindReply,
		"04-out-of-office.eml":    publisher.KindAutoReply,
		"05-bounce.eml":           publisher.KindBounce,
		"10-broken-boundary.eml":  publisher.KindNewRequest,
	} {
		if kinds[name] != want {
			t.Errorf("%s: kind %s, want %s", name, kinds[name], want)
		}
	}
}

// TestReplayBadInput: replay judges nothing itself (issue 11). An empty
// file is printed as the failed event the pipeline would publish (same id
// rule: EventID + "-failed"); a binary blob gets whatever event the parser
// makes of it, as a fetch of the same bytes would; the run succeeds. Only
// a file that cannot be read is listed as failed.
func TestReplayBadInput(t *testing.T) {
	dir := t.TempDir()
	raw, err := os.ReadFile(filepath.Join(samplesDir, "01-new-request.eml"))
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"good.eml": raw, "empty.eml": nil, "blob.bin": {0x7f, 'E', 'L', 'F', 0, 0, 0}} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	code, stdout, stderr := cli(t, nil, "replay", "--dry-run", "--progress", "none", dir)
	if code != 0 || !strings.Contains(stderr, "replayed 3 messages") {
		t.Fatalf("exit %d, want 0:\n%s", code, stderr)
	}
	evs := map[string]publisher.Event{}
	for _, line := range strings.Split(strings.TrimSpace(stdout), "\n") {
		var ev publisher.Event
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		evs[filepath.Base(ev.Source)] = ev
	}
	empty := evs["empty.eml"]
	if empty.Kind != publisher.KindFailed || empty.Error == nil || empty.Error.Code != pipeline.CodeEmpty ||
		empty.ID != publisher.EventID(ReplayServerName, "", sha256Hex(nil))+pipeline.FailedIDSuffix {
		t.Errorf("empty.eml: %+v", empty)
	}
	if evs["good.eml"].Kind != publisher.KindNewRequest || evs["blob.bin"].ID != publisher.EventID(ReplayServerName, "", sha256Hex([]byte{0x7f, 'E', 'L', 'F', 0, 0, 0})) {
		t.Errorf("events: %v", evs)
	}
	// Over parser.max_message_bytes: the pipeline's too_large failed event.
	cfg := filepath.Join(t.TempDir(), "mailworker.yaml")
	if err := os.WriteFile(cfg, []byte("parser: {max_message_bytes: 100}\nservers: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr = cli(t, nil, "replay", "--config", cfg, "--dry-run", "--progress", "none", filepath.Join(dir, "good.eml"))
	var big publisher.Event
	if code != 0 || json.Unmarshal([]byte(stdout), &big) != nil || big.Kind != publisher.KindFailed || big.Error == nil ||
		big.Error.Code != pipeline.CodeTooLarge || !strings.HasSuffix(big.ID, pipeline.FailedIDSuffix) {
		t.Errorf("over max_message_bytes: exit %d, %s\n%s", code, stdout, stderr)
	}
	if os.Geteuid() != 0 {
		unreadable := filepath.Join(dir, "unreadable.eml")
		if err := os.WriteFile(unreadable, raw, 0); err != nil {
			t.Fatal(err)
		}
		code, _, stderr := cli(t, nil, "replay", "--dry-run", "--progress", "none", dir)
		if code != 1 || !strings.Contains(stderr, "unreadable.eml: open") {
			t.Errorf("unreadable file: exit %d, want 1 and the file named:\n%s", code, stderr)
		}
	}
}

// TestReplayFromLinesIntoJetStream is issue 11's finding 3 end to end: a
// Maildir and a directory of .eml files whose files start with mbox "From "
// lines (LF and CRLF), a file with a banner line before its header and an
// empty file, replayed into a real JetStream: one event per message with
// the id a fetch of the same message gets; the empty file becomes a failed
// event on <prefix>.<server>.failed (raw kept), not a refusal of the run.
func TestReplayFromLinesIntoJetStream(t *testing.T) {
	ns := replayNATSServer(t)
	cfgPath := writeReplayConfig(t, ns.ClientURL(), "127.0.0.1", 1, "")
	env := map[string]string{"HELPDESK_PASSWORD": "secret"}
	raws := replaySamples(t)
	names := slices.Sorted(maps.Keys(raws))[:6]
	dir := t.TempDir()
	want := map[string]string{} // event id -> subject token
	for i, n := range names {
		nl := []string{"\n", "\r\n"}[i%2]
		body := strings.ReplaceAll(strings.ReplaceAll(string(raws[n]), "\r\n", "\n"), "\n", nl)
		data := fmt.Sprintf("From sender@example.org Tue Nov 24 10:00:%02d 2026%s%s", i, nl, body)
		path := filepath.Join(dir, "eml", n)
		if i%2 == 1 {
			path = filepath.Join(dir, "Maildir", []string{"cur", "new"}[i/2%2], fmt.Sprintf("%d.host:2,S", i))
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		want[publisher.EventID("helpdesk", "support@example.com", sha256Hex(raws[n]))] = ""
	}
	for _, sub := range []string{"cur", "new", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, "Maildir", sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	banner := "---- Original email message ----\r\nFrom: c@example.org\r\nTo: support@example.com\r\nSubject: forwarded by hand\r\n\r\nhello\r\n"
	if err := os.WriteFile(filepath.Join(dir, "eml", "zz-banner.eml"), []byte(banner), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "eml", "zz-empty.eml"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	want[publisher.EventID("helpdesk", "support@example.com", sha256Hex([]byte(banner)))] = ""
	failedID := publisher.EventID("helpdesk", "support@example.com", sha256Hex(nil)) + pipeline.FailedIDSuffix
	want[failedID] = ""

	code, _, stderr := cli(t, env, "replay", "--config", cfgPath, "--server", "helpdesk", "--progress", "none",
		filepath.Join(dir, "Maildir"), filepath.Join(dir, "eml"))
	if code != 0 || !strings.Contains(stderr, "replayed 8 messages") {
		t.Fatalf("replay: exit %d: %s", code, stderr)
	}
	got := replayStreamEvents(t, ns.ClientURL())
	if len(got) != len(want) {
		t.Fatalf("stream holds %d events, want %d: %v", len(got), len(want), got)
	}
	for id := range want {
		ev, ok := got[id]
		if !ok {
			t.Errorf("event %s missing; stream: %v", id, got)
			continue
		}
		if id == failedID {
			if ev.subject != "mail.helpdesk.failed" || ev.Kind != publisher.KindFailed || ev.Error == nil || ev.Error.Code != pipeline.CodeEmpty {
				t.Errorf("empty file: %s %+v", ev.subject, ev.Event)
			}
			continue
		}
		if ev.Kind == publisher.KindFailed || ev.Message == nil || ev.From == nil {
			t.Errorf("%s: %s %+v", id, ev.subject, ev.Event)
		}
	}
	if ev := got[publisher.EventID("helpdesk", "support@example.com", sha256Hex([]byte(banner)))]; ev.Message == nil || ev.Subject != "forwarded by hand" {
		t.Errorf("banner file: %+v", ev.Event)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(cfgPath), "data", "failed", sha256Hex(nil)+".eml")); err != nil {
		t.Errorf("raw of the failed message not kept: %v", err)
	}
}

type streamEvent struct {
	publisher.Event
	subject string
}

// replayStreamEvents returns every event of the MAIL stream by id.
func replayStreamEvents(t *testing.T, url string) map[string]streamEvent {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, "MAIL")
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]streamEvent{}
	for seq := info.State.FirstSeq; seq > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("get msg %d: %v", seq, err)
		}
		var ev publisher.Event
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			t.Fatalf("msg %d: %v", seq, err)
		}
		if ev.ID != m.Header.Get(jetstream.MsgIDHeader) {
			t.Errorf("msg %d: Nats-Msg-Id %s, event id %s", seq, m.Header.Get(jetstream.MsgIDHeader), ev.ID)
		}
		out[ev.ID] = streamEvent{Event: ev, subject: m.Subject}
	}
	return out
}

func TestReplayFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"replay"}, "no PATH"},
		{[]string{"replay", "--to", "imaps://a@h/INBOX", "x"}, "--password-env"},
		{[]string{"replay", "--to", "imaps://a@h/", "--to-server", "s", "x"}, "exclude"},
		{[]string{"replay", "--dry-run", "--to", "imaps://a@h/", "--password-env", "P", "x"}, "do not combine"},
		{[]string{"replay", "--ca-file", "ca.pem", "x"}, "go with --to"},
		{[]string{"replay", "--format", "zip", "x"}, "unknown format"},
		{[]string{"replay", "--bogus", "x"}, "flag provided but not defined"},
	} {
		code, _, stderr := cli(t, nil, tc.args...)
		if code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", tc.args, code, stderr, tc.want)
		}
	}
}

// TestReplayTo APPENDs through the CLI's --to form (STARTTLS), with the
// password from the environment; it must not appear in any output.
func TestReplayTo(t *testing.T) {
	m := imaptest.StartMem(t, imaptest.MemOptions{StartTLS: true, Users: map[string]string{"bob@example.com": "pw-Xy7!"}})
	url := fmt.Sprintf("imap://bob%%40example.com@127.0.0.1:%d/INBOX", m.StartTLSPort())
	code, stdout, stderr := cli(t, map[string]string{"BOB_PW": "pw-Xy7!"}, "replay", "--to", url, "--password-env", "BOB_PW", "--ca-file", m.CAFile(), samplesDir)
	if code != 0 {
		t.Fatalf("replay --to: exit %d: %s", code, stderr)
	}
	if n := len(m.Messages(t, "bob@example.com", "INBOX")); n != 10 {
		t.Errorf("mailbox has %d messages, want 10", n)
	}
	if strings.Contains(stdout+stderr, "pw-Xy7!") {
		t.Error("the password appears in the output")
	}
	code, _, stderr = cli(t, map[string]string{"BOB_PW": "wrong-pw"}, "replay", "--to", url, "--password-env", "BOB_PW", "--ca-file", m.CAFile(), samplesDir)
	if code != 1 || strings.Contains(stderr, "wrong-pw") {
		t.Errorf("wrong password: exit %d, stderr %q; want 1, without the password", code, stderr)
	}
}

// TestReplayToServer APPENDs to the folder of a configured server, logging
// in with that server's credentials.
func TestReplayToServer(t *testing.T) {
	ns := replayNATSServer(t)
	m := imaptest.StartMem(t, imaptest.MemOptions{})
	m.CreateFolder(t, "alice", "Support")
	cfgPath := writeReplayConfig(t, ns.ClientURL(), "127.0.0.1", m.Port(), m.CAFile())
	env := map[string]string{"HELPDESK_PASSWORD": "secret", "MAILWORKER_SERVERS_HELPDESK_FOLDER": "Support"}
	code, _, stderr := cli(t, env, "replay", "--config", cfgPath, "--to-server", "helpdesk", "--progress", "none", samplesDir)
	if code != 0 {
		t.Fatalf("replay --to-server: exit %d: %s", code, stderr)
	}
	if n := len(m.Messages(t, "alice", "Support")); n != 10 {
		t.Errorf("Support has %d messages, want 10", n)
	}
	if n := len(m.Messages(t, "alice", "INBOX")); n != 0 {
		t.Errorf("INBOX has %d messages, want 0", n)
	}

	// The fetcher finds them there and the pipeline publishes each once,
	// with the id a direct replay would give; a second fetch adds nothing.
	getenv := func(k string) string { return env[k] }
	cfg, err := config.LoadWith(cfgPath, config.LoadOptions{Getenv: getenv})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w, err := worker.Open(ctx, worker.Options{Config: cfg, Getenv: getenv, Logs: quietLogs(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	srv, _ := findServer(cfg, "helpdesk")
	f, err := fetcher.NewIMAP(srv, fetcher.Deps{Checkpoints: fetcher.NewCheckpoints(w.DB()), Credentials: replay.PasswordCredentials{Secret: secret.New("secret")}})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var want []string
	for _, b := range replaySamples(t) {
		want = append(want, publisher.EventID("helpdesk", "support@example.com", sha256Hex(b)))
	}
	slices.Sort(want)
	for i := range 2 {
		if _, err := f.Fetch(ctx, w.Pipeline().ForServer(srv, nil)); err != nil {
			t.Fatalf("Fetch %d: %v", i+1, err)
		}
		if got := replayStreamIDs(t, ns.ClientURL()); !slices.Equal(got, want) {
			t.Fatalf("stream ids after fetch %d = %v, want %v", i+1, got, want)
		}
	}
	code, _, stderr = cli(t, env, "replay", "--config", cfgPath, "--to-server", "nosuch", samplesDir)
	if code != 1 || !strings.Contains(stderr, `no server named "nosuch"`) {
		t.Errorf("unknown --to-server: exit %d: %s", code, stderr)
	}
}
