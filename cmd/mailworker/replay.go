package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/mailworker/mailworker/config"
	"github.com/mailworker/mailworker/fetcher"
	"github.com/mailworker/mailworker/replay"
	"github.com/mailworker/mailworker/secret"
)

func init() {
	register(&command{
		name:    "replay",
		usage:   "[--server NAME | --to URL | --to-server NAME] [--dry-run] PATH...",
		summary: "replay .eml files, directories, mbox files or Maildirs (publish, or APPEND to a mailbox)",
		run:     runReplay,
	})
}

const replayUsage = `usage: mailworker replay [flags] PATH...

Reads .eml files, directories of them (recursively), mbox files and Maildirs
(cur/ and new/) and, by default, publishes each message exactly as a fetch of
the same bytes would: same event id, kind and dedupe, so replaying twice
publishes nothing new.

Destinations (choose one):
  (default)          publish as server --server NAME (its naming and flags);
                     without --server as a synthetic server named "replay"
  --dry-run          print the events as JSON lines instead of publishing
  --to URL           APPEND to a mailbox: imaps://user@host[:port]/Folder or
                     imap://... (STARTTLS); password from --password-env
  --to-server NAME   APPEND to the host, folder and credentials (password or
                     OAuth) of configured server NAME

Progress goes to stderr (a bar on a terminal). Messages that cannot be read
are listed at the end; the exit status is 1 when any failed.

Flags:
`

// errReplayFailures: the failures are listed already; exit 1 quietly.
var errReplayFailures = errors.New("some messages failed")

// errFlagsReported: the flag package has already printed the problem.
var errFlagsReported = errors.New("bad flags")

// replayFlags are the parsed flags of `mailworker replay`.
type replayFlags struct {
	config, format, server string
	to, toServer           string
	passwordEnv, caFile    string
	insecure, dryRun       bool
	progress               string
	paths                  []string
}

func parseReplayFlags(env *cliEnv, args []string) (*replayFlags, error) {
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	fs.Usage = func() {
		fmt.Fprint(env.stderr, replayUsage)
		fs.PrintDefaults()
	}
	f := &replayFlags{}
	cfg := configFlag(fs)
	fs.StringVar(&f.format, "format", "", "input `FORMAT`: eml, dir, mbox or maildir (default: detect)")
	fs.StringVar(&f.server, "server", "", "publish as configured server `NAME`")
	fs.BoolVar(&f.dryRun, "dry-run", false, "print the events instead of publishing them")
	fs.StringVar(&f.to, "to", "", "APPEND to this mailbox `URL` (imaps://user@host:port/Folder, imap:// for STARTTLS)")
	fs.StringVar(&f.toServer, "to-server", "", "APPEND to the folder of configured server `NAME`, with its credentials")
	fs.StringVar(&f.passwordEnv, "password-env", "", "with --to: environment `VARIABLE` holding the password")
	fs.StringVar(&f.caFile, "ca-file", "", "with --to: PEM `FILE` of the CA (or self-signed certificate) to trust")
	fs.BoolVar(&f.insecure, "insecure-skip-verify", false, "with --to: do not verify the server's certificate (tests only)")
	fs.StringVar(&f.progress, "progress", "auto", "progress on stderr: `auto` (bar on a terminal), bar, plain or none")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, errFlagsReported
	}
	f.config = *cfg
	f.paths = fs.Args()
	switch {
	case len(f.paths) == 0:
		return nil, errors.New("no PATH given")
	case f.to != "" && f.toServer != "":
		return nil, errors.New("--to and --to-server exclude each other")
	case (f.to != "" || f.toServer != "") && (f.dryRun || f.server != ""):
		return nil, errors.New("--dry-run and --server publish directly; they do not combine with --to or --to-server")
	case f.to == "" && (f.passwordEnv != "" || f.caFile != "" || f.insecure):
		return nil, errors.New("--password-env, --ca-file and --insecure-skip-verify go with --to")
	case f.to != "" && f.passwordEnv == "":
		return nil, errors.New("--to needs --password-env VARIABLE (passwords are never given on the command line)")
	}
	switch f.progress {
	case "auto", "bar", "plain", "none":
	default:
		return nil, fmt.Errorf("--progress %q: want auto, bar, plain or none", f.progress)
	}
	if _, err := replay.ParseFormat(f.format); err != nil {
		return nil, fmt.Errorf("--format: %w", err)
	}
	return f, nil
}

func runReplay(env *cliEnv, args []string) int {
	f, err := parseReplayFlags(env, args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		if !errors.Is(err, errFlagsReported) {
			fmt.Fprintf(env.stderr, "mailworker replay: %v (see mailworker replay --help)\n", err)
		}
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger := slog.New(slog.NewTextHandler(env.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if err := replayMain(ctx, env, f, logger); err != nil {
		if !errors.Is(err, errReplayFailures) {
			fmt.Fprintf(env.stderr, "mailworker replay: %v\n", err)
		}
		return 1
	}
	return 0
}

// replayMain plans, picks the target and runs the replay.
func replayMain(ctx context.Context, env *cliEnv, f *replayFlags, logger *slog.Logger) error {
	format, _ := replay.ParseFormat(f.format)
	plan, err := replay.NewPlan(f.paths, format)
	if err != nil {
		return err
	}
	target, closeTarget, err := replayTarget(ctx, env, f, logger)
	if err != nil {
		return err
	}
	defer closeTarget()

	opts := replay.Options{Target: target, Logger: logger}
	switch f.progress {
	case "bar":
		opts.Progress, opts.Terminal = env.stderr, true
	case "plain":
		opts.Progress = env.stderr
	case "auto":
		opts.Progress, opts.Terminal = env.stderr, isTerminal(env.stderr)
	}
	res, err := replay.Run(ctx, plan, opts)
	fmt.Fprintln(env.stderr, res)
	for _, fl := range res.Failures {
		fmt.Fprintf(env.stderr, "  %s\n", fl)
	}
	if errors.Is(err, replay.ErrFailures) {
		return errReplayFailures
	}
	return err
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// replayTarget builds the destination the flags ask for and a function
// releasing it.
func replayTarget(ctx context.Context, env *cliEnv, f *replayFlags, logger *slog.Logger) (replay.Target, func(), error) {
	switch {
	case f.to != "":
		srv, err := replay.ParseIMAPURL(f.to)
		if err != nil {
			return nil, nil, err
		}
		srv.TLS.CAFile = f.caFile
		srv.TLS.InsecureSkipVerify = f.insecure
		pw := env.getenv(f.passwordEnv)
		if pw == "" {
			return nil, nil, fmt.Errorf("--password-env %s: variable is empty or unset", f.passwordEnv)
		}
		return imapTarget(ctx, srv, replay.PasswordCredentials{Secret: secret.New(pw)}, logger)
	case f.toServer != "":
		cfg, err := loadConfigOrDefaults(env, f.config)
		if err != nil {
			return nil, nil, err
		}
		srv, ok := findServer(cfg, f.toServer)
		if !ok {
			return nil, nil, fmt.Errorf("--to-server: no server named %q in %s", f.toServer, cfg.Path)
		}
		if srv.Protocol != config.ProtocolIMAPS && srv.Protocol != config.ProtocolIMAP {
			return nil, nil, fmt.Errorf("--to-server %s: protocol %s does not support APPEND; use an imap or imaps server", srv.Name, srv.Protocol)
		}
		m, closeDB, err := openOAuth(ctx, env, cfg, logger)
		if err != nil {
			return nil, nil, err
		}
		m.SetServers(cfg.Servers)
		t, closeIMAP, err := imapTarget(ctx, srv, m.Credentials(srv), logger)
		if err != nil {
			closeDB()
			return nil, nil, err
		}
		return t, func() { closeIMAP(); closeDB() }, nil
	}
	return directTarget(ctx, env, f, logger)
}

// replayDialTimeout bounds connecting and logging in to a --to mailbox.
const replayDialTimeout = time.Minute

func imapTarget(ctx context.Context, srv config.Server, creds fetcher.Credentials, logger *slog.Logger) (replay.Target, func(), error) {
	dctx, cancel := context.WithTimeout(ctx, replayDialTimeout)
	defer cancel()
	c, err := fetcher.DialIMAP(dctx, srv, fetcher.Deps{Credentials: creds, Logger: logger})
	if err != nil {
		return nil, nil, err
	}
	folder := srv.Folder
	if folder == "" {
		folder = "INBOX"
	}
	port := srv.Port
	if port == 0 {
		port = 993
		if srv.Protocol == config.ProtocolIMAP {
			port = 143
		}
	}
	t := &replay.IMAPTarget{Client: c, Addr: net.JoinHostPort(srv.Host, strconv.Itoa(port)), Folder: folder}
	return t, func() {
		if err := c.Logout().Wait(); err != nil {
			logger.Debug("imap logout", "err", err)
		}
		if err := c.Close(); err != nil {
			logger.Debug("imap close", "err", err)
		}
	}, nil
}
