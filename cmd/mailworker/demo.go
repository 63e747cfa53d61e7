package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mailworker/mailworker/config"
	"github.com/mailworker/mailworker/logging"
	"github.com/mailworker/mailworker/publisher"
	"github.com/mailworker/mailworker/selfsigned"
	"github.com/mailworker/mailworker/worker"
)

func init() {
	register(&command{
		name:    "demo",
		usage:   "[--samples DIR] [--data-dir DIR] [--imap-listen ADDR] [--max-events N]",
		summary: "run the whole pipeline against an in-process IMAPS server seeded with sample mail, printing each event",
		run:     cmdDemo,
	})
}

// Demo mailbox credentials. The server listens on loopback only and lives
// as long as the demo; these are not secrets.
const (
	demoUser        = "demo"
	demoPassword    = "demo"
	demoPasswordEnv = "MAILWORKER_DEMO_PASSWORD"
	demoAddress     = "support@example.com"
)

func cmdDemo(env *cliEnv, args []string) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	fs.String("config", "", "ignored: the demo builds its own configuration")
	samples := fs.String("samples", filepath.Join("testdata", "mail"), "directory of .eml files to seed the mailbox with")
	dataDir := fs.String("data-dir", "", "keep the database and NATS store here (default: a temporary directory, removed at exit)")
	listen := fs.String("imap-listen", "127.0.0.1:0", "address of the demo IMAPS server")
	maxEvents := fs.Int("max-events", 0, "exit after printing this many events (0: run until Ctrl-C)")
	interval := fs.Duration("interval", 10*time.Second, "fetch interval")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	msgs, err := readSamples(*samples)
	if err != nil {
		fmt.Fprintf(env.stderr, "demo: %v\n(run it from the repository root, or pass --samples DIR)\n", err)
		return 1
	}
	dir := *dataDir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "mailworker-demo-*"); err != nil {
			fmt.Fprintln(env.stderr, "demo:", err)
			return 1
		}
		defer os.RemoveAll(dir)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := runDemo(ctx, env, dir, *listen, *interval, msgs, *maxEvents); err != nil {
		fmt.Fprintln(env.stderr, "demo:", err)
		return 1
	}
	return 0
}

// readSamples returns the .eml files of dir, by name.
func readSamples(dir string) ([][]byte, error) {
	names, err := filepath.Glob(filepath.Join(dir, "*.eml"))
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("no .eml files in %s", dir)
	}
	sort.Strings(names)
	var msgs [][]byte
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			return nil, err
		}
		// IMAP stores CRLF lines; seed what a real server would hold.
		msgs = append(msgs, toCRLF(b))
	}
	return msgs, nil
}

func toCRLF(b []byte) []byte {
	b = bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n"))
	return bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n"))
}

// demoIMAP is the demo's mailbox: go-imap's in-memory server over TLS.
type demoIMAP struct {
	srv  *imapserver.Server
	ln   net.Listener
	user *imapmemserver.User
	cert *selfsigned.Cert
}

func startDemoIMAP(dir, listen string) (*demoIMAP, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	cert, err := selfsigned.Write(dir, 24*time.Hour)
	if err != nil {
		return nil, err
	}
	mem := imapmemserver.New()
	user := imapmemserver.NewUser(demoUser, demoPassword)
	if err := user.Create("INBOX", nil); err != nil {
		return nil, err
	}
	mem.AddUser(user)
	srv := imapserver.New(&imapserver.Options{
		NewSession: func(*imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			return mem.NewSession(), nil, nil
		},
		Caps:      imap.CapSet{imap.CapIMAP4rev1: {}, imap.CapIMAP4rev2: {}},
		TLSConfig: cert.ServerConfig(),
	})
	ln, err := tls.Listen("tcp", listen, cert.ServerConfig())
	if err != nil {
		return nil, err
	}
	go srv.Serve(ln)
	return &demoIMAP{srv: srv, ln: ln, user: user, cert: cert}, nil
}

func (d *demoIMAP) append(msgs [][]byte) error {
	for _, m := range msgs {
		if _, err := d.user.Append("INBOX", bytes.NewReader(m), &imap.AppendOptions{Time: time.Now()}); err != nil {
			return err
		}
	}
	return nil
}

func (d *demoIMAP) port() int { return d.ln.Addr().(*net.TCPAddr).Port }

func runDemo(ctx context.Context, env *cliEnv, dir, listen string, interval time.Duration, msgs [][]byte, maxEvents int) error {
	mbox, err := startDemoIMAP(filepath.Join(dir, "imap"), listen)
	if err != nil {
		return fmt.Errorf("imap server: %w", err)
	}
	defer mbox.srv.Close()
	if err := mbox.append(msgs); err != nil {
		return fmt.Errorf("seed: %w", err)
	}

	srv := config.Server{
		Name: "demo", Protocol: config.ProtocolIMAPS, Host: "127.0.0.1", Port: mbox.port(),
		TLS:      config.TLS{CAFile: mbox.cert.CertFile},
		Username: demoUser, Addresses: []string{demoAddress},
		Auth:          config.Auth{Method: config.AuthPassword, PasswordEnv: demoPasswordEnv},
		FetchInterval: config.Duration(interval),
	}
	cfg := &config.Config{DataDir: dir, Admin: config.Admin{Listen: "off"}, Servers: []config.Server{srv}}
	cfg.SetDefaults()
	logs, err := logging.New(logging.Options{Writer: env.stderr})
	if err != nil {
		return err
	}
	getenv := func(k string) string {
		if k == demoPasswordEnv {
			return demoPassword
		}
		return env.getenv(k)
	}
	w, err := worker.Open(ctx, worker.Options{Config: cfg, Logs: logs, Getenv: getenv, EmbeddedListen: "127.0.0.1:0"})
	if err != nil {
		return err
	}
	defer w.Close()

	fmt.Fprintf(env.stderr, `
mailworker demo
  IMAPS mailbox  127.0.0.1:%d  user %q, password %q (CA: %s)
  NATS           %s  stream %s, subjects %s.demo.<request|reply|auto|suppressed|failed>
  data           %s
  seeded %d sample messages; events follow on stdout, one JSON object per line.
  In another terminal:
    %s=%s go run ./cmd/mailworker replay --to imaps://%s@127.0.0.1:%d/INBOX --password-env %s --ca-file %s testdata/mail
    MAILWORKER_NATS_URL=%s go run ./cmd/mailworker events --follow
  Ctrl-C stops.

`, mbox.port(), demoUser, demoPassword, mbox.cert.CertFile, w.NATSURL(), cfg.NATS.Stream, cfg.NATS.SubjectPrefix, dir, len(msgs),
		demoPasswordEnv, demoPassword, demoUser, mbox.port(), demoPasswordEnv, mbox.cert.CertFile, w.NATSURL())

	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	printed := 0
	followErr := make(chan error, 1)
	go func() {
		followErr <- publisher.Follow(fctx, w.Publisher().JetStream(), cfg.NATS.Stream, cfg.NATS.SubjectPrefix+".>", true,
			func(ev *publisher.Event, m jetstream.Msg) error {
				line, err := publisher.Encode(ev)
				if err != nil {
					return err
				}
				fmt.Fprintln(env.stdout, string(line))
				fmt.Fprintf(env.stderr, "event on %s: %s\n", m.Subject(), summary(ev))
				printed++
				if maxEvents > 0 && printed >= maxEvents {
					return publisher.ErrStop
				}
				return nil
			})
	}()
	if err := w.Start(); err != nil {
		return err
	}
	defer func() {
		gctx, c := context.WithTimeout(context.Background(), worker.ShutdownGrace)
		w.Stop(gctx)
		c()
	}()
	select {
	case <-ctx.Done():
		return nil
	case err := <-followErr:
		if err == nil || errors.Is(err, publisher.ErrStop) || errors.Is(err, context.Canceled) {
			return nil
		}
		return err
	}
}

// summary is a one-line human description of an event.
func summary(ev *publisher.Event) string {
	if ev.Message == nil {
		if ev.Error != nil {
			return fmt.Sprintf("%s (%s: %s)", ev.Kind, ev.Error.Code, ev.Error.Message)
		}
		return string(ev.Kind)
	}
	from := "(no sender)"
	if ev.From != nil {
		from = ev.From.Address
	}
	s := fmt.Sprintf("%s from %s: %q", ev.Kind, from, ev.Subject)
	if ev.TicketRef != "" {
		s += " (request " + ev.TicketRef + ")"
	}
	if n := len(ev.Attachments); n > 0 {
		s += fmt.Sprintf(", %d attachment(s)", n)
	}
	if ev.Suppressed {
		s += ", suppressed"
	}
	return strings.TrimSpace(s)
}
