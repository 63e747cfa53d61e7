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
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
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
	"github.com/mailworker/mailworker/samples"
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
	samplesDir := fs.String("samples", "", "directory of .eml files to seed the mailbox with (default: the sample mail built into the binary)")
	dataDir := fs.String("data-dir", "", "keep the database and NATS store here (default: a temporary directory, removed at exit)")
	listen := fs.String("imap-listen", "127.0.0.1:0", "address of the demo IMAPS server")
	maxEvents := fs.Int("max-events", 0, "exit after printing this many events (0: run until Ctrl-C)")
	interval := fs.Duration("interval", 10*time.Second, "fetch interval")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var (
		msgs [][]byte
		err  error
	)
	if *samplesDir != "" {
		if msgs, err = readSamples(*samplesDir); err != nil {
			fmt.Fprintf(env.stderr, "demo: --samples: %v\n", err)
			return 1
		}
	}
	dir := *dataDir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "mailworker-demo-*"); err != nil {
			fmt.Fprintln(env.stderr, "demo:", err)
			return 1
		}
		defer os.RemoveAll(dir)
	}
	// The replay hint names a directory of .eml files: --samples, else the
	// built-in samples written out into the data directory.
	replayDir := *samplesDir
	if replayDir == "" {
		if msgs, replayDir, err = builtinSamples(filepath.Join(dir, "samples")); err != nil {
			fmt.Fprintln(env.stderr, "demo: sample mail:", err)
			return 1
		}
	}
	if abs, err := filepath.Abs(replayDir); err == nil {
		replayDir = abs
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := runDemo(ctx, env, dir, *listen, *interval, msgs, replayDir, *maxEvents); err != nil {
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

// builtinSamples returns the sample mail built into the binary (package
// samples), with CRLF line ends, and writes it as .eml files to dir so the
// user can replay it into the running demo from any directory.
func builtinSamples(dir string) ([][]byte, string, error) {
	ms, err := samples.Mail()
	if err != nil {
		return nil, "", err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, "", err
	}
	msgs := make([][]byte, 0, len(ms))
	for _, m := range ms {
		if err := os.WriteFile(filepath.Join(dir, m.Name), m.Data, 0o600); err != nil {
			return nil, "", err
		}
		msgs = append(msgs, toCRLF(m.Data))
	}
	return msgs, dir, nil
}

// selfCommand is how to run this binary again from another terminal while
// it runs: "mailworker" when that is what $PATH finds, else the absolute
// path of the executable (with `go run`, the build's temporary binary,
// which lives as long as the demo).
func selfCommand() string {
	exe, err := os.Executable()
	if err != nil {
		return "mailworker"
	}
	if p, err := exec.LookPath("mailworker"); err == nil {
		a, err1 := os.Stat(p)
		b, err2 := os.Stat(exe)
		if err1 == nil && err2 == nil && os.SameFile(a, b) {
			return "mailworker"
		}
	}
	if strings.ContainsAny(exe, " '\"$") {
		return strconv.Quote(exe)
	}
	return exe
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

func runDemo(ctx context.Context, env *cliEnv, dir, listen string, interval time.Duration, msgs [][]byte, replayDir string, maxEvents int) error {
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

	self := selfCommand()
	fmt.Fprintf(env.stderr, `
mailworker demo
  IMAPS mailbox  127.0.0.1:%d  user %q, password %q (CA: %s)
  NATS           %s  stream %s, subjects %s.demo.<request|reply|auto|suppressed|failed>
  data           %s
  seeded %d sample messages; events follow on stdout, one JSON object per line.
  In another terminal:
    %s=%s %s replay --to imaps://%s@127.0.0.1:%d/INBOX --password-env %s --ca-file %s %s
    MAILWORKER_NATS_URL=%s %s events --follow
  Ctrl-C stops.

`, mbox.port(), demoUser, demoPassword, mbox.cert.CertFile, w.NATSURL(), cfg.NATS.Stream, cfg.NATS.SubjectPrefix, dir, len(msgs),
		demoPasswordEnv, demoPassword, self, demoUser, mbox.port(), demoPasswordEnv, mbox.cert.CertFile, replayDir, w.NATSURL(), self)

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
