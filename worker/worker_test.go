package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mailworker/mailworker/config"
	"github.com/mailworker/mailworker/imaptest"
	"github.com/mailworker/mailworker/logging"
	"github.com/mailworker/mailworker/publisher"
	"github.com/mailworker/mailworker/storage/storagetest"
)

const (
	testUser     = "alice"
	testPassword = "s3cret-Pa55word-for-grep"
	passwordEnv  = "MW_TEST_IMAP_PASSWORD"
)

func getenv(k string) string {
	if k == passwordEnv {
		return testPassword
	}
	return ""
}

// broker is a NATS server with JetStream that outlives the workers under
// test, and can be stopped and restarted on the same port and store.
type broker struct {
	t    *testing.T
	dir  string
	addr string
	emb  *publisher.Embedded
}

func startBroker(t *testing.T) *broker {
	t.Helper()
	b := &broker{t: t, dir: t.TempDir(), addr: "127.0.0.1:0"}
	b.start()
	u, err := url.Parse(b.emb.URL())
	if err != nil {
		t.Fatal(err)
	}
	b.addr = u.Host
	t.Cleanup(b.stop)
	return b
}

func (b *broker) start() {
	b.t.Helper()
	emb, err := publisher.StartEmbedded(b.dir, nil, publisher.WithListen(b.addr))
	if err != nil {
		b.t.Fatalf("start broker: %v", err)
	}
	b.emb = emb
}

func (b *broker) stop() {
	if b.emb != nil {
		b.emb.Shutdown()
		b.emb = nil
	}
}

func (b *broker) url() string { return "nats://" + b.addr }

// events reads every event in the stream, in order.
func (b *broker) events(t *testing.T) []publisher.Event {
	t.Helper()
	nc, err := nats.Connect(b.url())
	if err != nil {
		t.Fatalf("connect broker: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := js.Stream(ctx, "MAIL")
	if err != nil {
		t.Fatalf("stream: %v", err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []publisher.Event
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("get msg %d: %v", seq, err)
		}
		var ev publisher.Event
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			t.Fatalf("event %d: %v", seq, err)
		}
		if got := m.Header.Get(jetstream.MsgIDHeader); got != ev.ID {
			t.Fatalf("event %d: Nats-Msg-Id %q, event id %q", seq, got, ev.ID)
		}
		ev.Kind = publisher.Kind(m.Subject) // keep the subject for assertions
		out = append(out, ev)
	}
	return out
}

// count returns the stream's message count without reading it.
func (b *broker) count(t *testing.T) int {
	t.Helper()
	nc, err := nats.Connect(b.url())
	if err != nil {
		return -1
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, "MAIL")
	if err != nil {
		return 0
	}
	info, err := st.Info(ctx)
	if err != nil {
		return -1
	}
	return int(info.State.Msgs)
}

// message builds a unique message of roughly size bytes.
func message(i, size int) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: Customer %d <customer%d@example.com>\r\nTo: support@example.test\r\n", i, i)
	fmt.Fprintf(&b, "Subject: Request number %d\r\nMessage-ID: <msg-%d@example.com>\r\n", i, i)
	fmt.Fprintf(&b, "Date: Mon, 02 Jan 2006 15:04:05 +0000\r\nMIME-Version: 1.0\r\n")
	if size < 64<<10 {
		b.WriteString("Content-Type: text/plain; charset=utf-8\r\n\r\n")
		line := fmt.Sprintf("Line of message %d, please help with my printer.\r\n", i)
		for b.Len() < size {
			b.WriteString(line)
		}
		return b.Bytes()
	}
	b.WriteString("Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n")
	b.WriteString("--b\r\nContent-Type: application/octet-stream; name=data.bin\r\nContent-Transfer-Encoding: base64\r\n\r\n")
	r := rand.New(rand.NewPCG(uint64(i), 7))
	chunk := make([]byte, 57)
	for b.Len() < size {
		for j := range chunk {
			chunk[j] = byte(r.Uint32())
		}
		b.WriteString(base64Line(chunk))
	}
	b.WriteString("--b--\r\n")
	return b.Bytes()
}

func base64Line(p []byte) string {
	const enc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	var sb strings.Builder
	for i := 0; i+3 <= len(p); i += 3 {
		v := uint(p[i])<<16 | uint(p[i+1])<<8 | uint(p[i+2])
		sb.WriteByte(enc[v>>18&63])
		sb.WriteByte(enc[v>>12&63])
		sb.WriteByte(enc[v>>6&63])
		sb.WriteByte(enc[v&63])
	}
	sb.WriteString("\r\n")
	return sb.String()
}

// mixedMailbox returns n messages: mostly 2–16 KB, every 100th 1–2 MB,
// and every 500th 5 MB (over the spool's in-memory limit, so it goes
// through a file in data_dir/tmp).
func mixedMailbox(n int) [][]byte {
	msgs := make([][]byte, n)
	for i := range msgs {
		size := 2<<10 + (i*997)%(14<<10)
		switch {
		case i%500 == 499:
			size = 5 << 20
		case i%100 == 99:
			size = 1<<20 + (i%7)*(150<<10)
		}
		msgs[i] = message(i, size)
	}
	return msgs
}

func imapServer(name string, d *imaptest.Dovecot, after string) config.Server {
	af, err := config.ParseAfterFetch(after)
	if err != nil {
		panic(err)
	}
	s := config.Server{
		Name: name, Protocol: config.ProtocolIMAPS, Host: "127.0.0.1", Port: d.Port(),
		TLS:      config.TLS{CAFile: d.CAFile()},
		Username: testUser, Addresses: []string{"support@example.test"},
		Auth:          config.Auth{Method: config.AuthPassword, PasswordEnv: passwordEnv},
		FetchInterval: config.Duration(time.Hour), MaxPerFetch: 500, AfterFetch: af,
	}
	s.SetDefaults()
	return s
}

func testConfig(t *testing.T, driver, natsURL string, servers ...config.Server) *config.Config {
	cfg := &config.Config{
		DataDir:  t.TempDir(),
		Database: storagetest.Config(t, driver),
		NATS:     config.NATS{URL: natsURL},
		Admin:    config.Admin{Listen: "off"},
		Servers:  servers,
	}
	cfg.SetDefaults()
	cfg.Servers = servers
	return cfg
}

// logBuffer collects log output safely across goroutines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func openWorker(t *testing.T, cfg *config.Config, logs *logBuffer) *Worker {
	t.Helper()
	var out io.Writer = io.Discard
	if logs != nil {
		out = logs
	}
	f, err := logging.New(logging.Options{Writer: out, Format: "json"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	wk, err := Open(ctx, Options{Config: cfg, Logs: f, Getenv: getenv})
	if err != nil {
		t.Fatalf("worker.Open: %v", err)
	}
	return wk
}

func uniqueIDs(t *testing.T, evs []publisher.Event) map[string]bool {
	t.Helper()
	ids := map[string]bool{}
	for _, ev := range evs {
		if ids[ev.ID] {
			t.Errorf("event id %s delivered twice", ev.ID)
		}
		ids[ev.ID] = true
	}
	return ids
}

// TestExactlyOnceDovecot is the pipeline's acceptance run against a real
// Dovecot: 1,000 mixed messages become exactly 1,000 events; a restart
// publishes nothing; a UIDVALIDITY reset republishes nothing; a NATS outage
// in the middle of a fetch loses nothing; on SQLite and PostgreSQL.
func TestExactlyOnceDovecot(t *testing.T) {
	for _, driver := range storagetest.Drivers {
		t.Run(driver, func(t *testing.T) {
			d := imaptest.StartDovecot(t, imaptest.DovecotOptions{Users: map[string]string{testUser: testPassword}})
			const n = 1000
			d.SeedMaildir(testUser, "INBOX", mixedMailbox(n))
			b := startBroker(t)
			cfg := testConfig(t, driver, b.url(), imapServer("support", d, "mark_seen"))
			ctx := context.Background()

			// First pass, with the broker stopped after about 300 events and
			// started again: the run fails without losing anything.
			w := openWorker(t, cfg, nil)
			done := make(chan error, 1)
			go func() { done <- w.RunOnce(ctx) }()
			waitFor(t, 2*time.Minute, "300 events", func() bool { return b.count(t) >= 300 })
			b.stop()
			if err := <-done; err == nil {
				t.Log("RunOnce finished before the broker stopped; outage not exercised")
			}
			b.start()
			waitFor(t, time.Minute, "reconnect", func() bool { return w.Publisher().Healthy() })
			if err := w.RunOnce(ctx); err != nil {
				t.Fatalf("RunOnce after the outage: %v", err)
			}
			evs := b.events(t)
			if ids := uniqueIDs(t, evs); len(evs) != n || len(ids) != n {
				t.Fatalf("stream holds %d events (%d unique); want exactly %d", len(evs), len(ids), n)
			}
			for _, m := range d.Messages(testUser, "INBOX") {
				if !m.Has(imap.FlagSeen) {
					t.Fatalf("uid %d not \\Seen after mark_seen", m.UID)
				}
			}
			w.Close()

			// A restart publishes nothing new.
			w = openWorker(t, cfg, nil)
			if err := w.RunOnce(ctx); err != nil {
				t.Fatal(err)
			}
			if got := b.count(t); got != n {
				t.Fatalf("after restart the stream holds %d events; want %d", got, n)
			}

			// A UIDVALIDITY reset: every message has a new UID and is fetched
			// again, and the ledger republishes nothing.
			d.ResetUIDValidity(testUser, "INBOX")
			if err := w.RunOnce(ctx); err != nil {
				t.Fatal(err)
			}
			if got := b.count(t); got != n {
				t.Fatalf("after a UIDVALIDITY reset the stream holds %d events; want %d", got, n)
			}
			sts, err := w.Status(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if r := sts[0].Run; r == nil || r.Published != n || r.Duplicates < n {
				t.Fatalf("status = %+v; want %d published and at least %d duplicates (the rescan)", r, n, n)
			}
			w.Close()
		})
	}
}

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// TestMain removes the binary built by buildBinary.
func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestAfterFetchActionsDovecot checks that each post-fetch action leaves
// the mailbox as promised once the events are acknowledged.
func TestAfterFetchActionsDovecot(t *testing.T) {
	const n = 40
	for _, after := range []string{"move:Processed", "delete", "none"} {
		t.Run(after, func(t *testing.T) {
			d := imaptest.StartDovecot(t, imaptest.DovecotOptions{Users: map[string]string{testUser: testPassword}})
			d.SeedMaildir(testUser, "INBOX", mixedMailbox(n))
			d.SeedMaildir(testUser, "Processed", nil)
			b := startBroker(t)
			w := openWorker(t, testConfig(t, storagetest.Drivers[0], b.url(), imapServer("support", d, after)), nil)
			defer w.Close()
			if err := w.RunOnce(context.Background()); err != nil {
				t.Fatal(err)
			}
			if got := b.count(t); got != n {
				t.Fatalf("%d events; want %d", got, n)
			}
			inbox, processed := d.Messages(testUser, "INBOX"), d.Messages(testUser, "Processed")
			switch after {
			case "move:Processed":
				if len(inbox) != 0 || len(processed) != n {
					t.Fatalf("INBOX %d, Processed %d; want 0 and %d", len(inbox), len(processed), n)
				}
			case "delete":
				if len(inbox) != 0 {
					t.Fatalf("INBOX holds %d after delete", len(inbox))
				}
			case "none":
				if len(inbox) != n {
					t.Fatalf("INBOX holds %d; want %d", len(inbox), n)
				}
				for _, m := range inbox {
					if m.Has(imap.FlagSeen) || m.Has(imap.FlagDeleted) {
						t.Fatalf("uid %d flags %v changed with after_fetch none", m.UID, m.Flags)
					}
				}
			}
		})
	}
}

// TestKilledWorkerDovecot kills a real `mailworker run` process with
// SIGKILL in the middle of a fetch and starts it again: the stream ends
// with every message exactly once.
func TestKilledWorkerDovecot(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildBinary(t)
	d := imaptest.StartDovecot(t, imaptest.DovecotOptions{Users: map[string]string{testUser: testPassword}})
	const n = 1000
	d.SeedMaildir(testUser, "INBOX", mixedMailbox(n))
	b := startBroker(t)
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "mailworker.yaml")
	yaml := fmt.Sprintf(`data_dir: %s
nats:
  url: %s
admin:
  listen: "off"
log:
  format: json
servers:
  - name: support
    protocol: imaps
    host: 127.0.0.1
    port: %d
    tls: {ca_file: %s}
    username: %s
    addresses: [support@example.test]
    auth: {method: password, password_env: %s}
    fetch_interval: 10s
    max_per_fetch: 2000
`, filepath.Join(dir, "data"), b.url(), d.Port(), d.CAFile(), testUser, passwordEnv)
	if err := os.WriteFile(cfgFile, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func() *exec.Cmd {
		cmd := exec.Command(bin, "run", "--once", "--config", cfgFile)
		cmd.Env = append(os.Environ(), passwordEnv+"="+testPassword)
		var out logBuffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	cmd := run()
	waitFor(t, 2*time.Minute, "the first events", func() bool { return b.count(t) >= 250 })
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	killedAt := b.count(t)
	if killedAt >= n {
		t.Fatalf("the worker had published everything (%d) before it was killed", killedAt)
	}
	cmd = run()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("second run: %v", err)
	}
	evs := b.events(t)
	if ids := uniqueIDs(t, evs); len(evs) != n || len(ids) != n {
		t.Fatalf("stream holds %d events (%d unique) after a kill at %d; want exactly %d", len(evs), len(ids), killedAt, n)
	}
}
