package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/mailworker/mailworker/config"
	"github.com/mailworker/mailworker/fetcher"
	"github.com/mailworker/mailworker/oauth"
	"github.com/mailworker/mailworker/parser"
	"github.com/mailworker/mailworker/publisher"
	"github.com/mailworker/mailworker/secret"
	"github.com/mailworker/mailworker/storage"
)

func init() {
	register(&command{
		name:    "test-connection",
		usage:   "--server NAME",
		summary: "log in, report capabilities and counts, and parse the oldest message read-only (changes nothing)",
		run:     cmdTestConnection,
	})
}

// testConnectionTimeout bounds the whole test, sample included.
const testConnectionTimeout = 2 * time.Minute

func cmdTestConnection(env *cliEnv, args []string) int {
	fs := flag.NewFlagSet("test-connection", flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	cfgPath := configFlag(fs)
	name := fs.String("server", "", "the server to test (required)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := loadConfig(env, *cfgPath)
	if err != nil {
		fmt.Fprintln(env.stderr, err)
		return 1
	}
	srv, ok := cfg.Server(*name)
	if !ok {
		fmt.Fprintf(env.stderr, "test-connection: no server %q in the configuration (have: %s)\n", *name, serverNames(cfg))
		return 2
	}
	logs, err := newLogs(env, cfg)
	if err != nil {
		fmt.Fprintln(env.stderr, err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), testConnectionTimeout)
	defer cancel()

	db, err := storage.Open(ctx, cfg.Database, cfg.DataDir)
	if err != nil {
		fmt.Fprintln(env.stderr, "test-connection:", err)
		return 1
	}
	defer db.Close()
	box, err := secret.LoadKey(cfg.DataDir, cfg.Secrets.KeyFile, env.getenv, logs.Logger())
	if err != nil {
		fmt.Fprintln(env.stderr, "test-connection:", err)
		return 1
	}
	tokens := oauth.New(db, box, logs.Logger(), nil)
	tokens.SetGetenv(env.getenv)
	tokens.SetServers(cfg.Servers)

	f, err := fetcher.New(*srv, fetcher.Deps{
		Checkpoints: fetcher.NewCheckpoints(db),
		Credentials: tokens.Credentials(*srv),
		Logger:      logs.Server(srv.Name, srv.EmailDebug),
	})
	if err != nil {
		fmt.Fprintln(env.stderr, "test-connection:", err)
		return 1
	}
	defer f.Close()
	rep, err := f.Test(ctx)
	if err != nil {
		fmt.Fprintf(env.stderr, "test-connection %s: FAILED: %v\n", srv.Name, err)
		return 1
	}
	printReport(env.stdout, rep)
	if rep.Sample != nil {
		printSample(env.stdout, *srv, cfg, rep.Sample)
	}
	fmt.Fprintf(env.stdout, "\n%s: OK (nothing was changed at the server)\n", srv.Name)
	return 0
}

func serverNames(cfg *config.Config) string {
	var n []string
	for _, s := range cfg.Servers {
		n = append(n, s.Name)
	}
	if len(n) == 0 {
		return "none"
	}
	return strings.Join(n, ", ")
}

func printReport(w io.Writer, r *fetcher.TestReport) {
	fmt.Fprintf(w, "server:        %s (%s)\n", r.Server, r.Protocol)
	fmt.Fprintf(w, "endpoint:      %s\n", r.Endpoint)
	fmt.Fprintf(w, "authenticated: %s\n", r.AuthMethod)
	if len(r.Capabilities) > 0 {
		fmt.Fprintf(w, "capabilities:  %s\n", strings.Join(r.Capabilities, " "))
	}
	fmt.Fprintf(w, "folder:        %s: %d messages", r.Folder, r.Messages)
	if r.Unseen >= 0 {
		fmt.Fprintf(w, ", %d unseen", r.Unseen)
	}
	fmt.Fprintln(w)
	if r.UIDValidity != 0 {
		fmt.Fprintf(w, "uidvalidity:   %d, uidnext %d\n", r.UIDValidity, r.UIDNext)
	}
	if r.Pending >= 0 {
		fmt.Fprintf(w, "pending:       %d messages newer than the checkpoint\n", r.Pending)
	}
}

// printSample parses the sample and shows what its event would say.
func printSample(w io.Writer, srv config.Server, cfg *config.Config, sample io.Reader) {
	opts, err := parser.OptionsFromConfig(cfg.Parser)
	if err != nil {
		fmt.Fprintf(w, "sample:        not parsed: %v\n", err)
		return
	}
	opts = opts.ForServer(srv)
	m, err := parser.Parse(sample, opts)
	if err != nil {
		fmt.Fprintf(w, "sample:        oldest message could not be parsed: %v (it would become a failed event)\n", err)
		return
	}
	from := "(none)"
	if m.From != nil {
		from = m.From.Address
	}
	date := "(none)"
	if m.Date != nil {
		date = m.Date.Format(time.RFC3339)
	}
	fmt.Fprintln(w, "sample (oldest message):")
	fmt.Fprintf(w, "  from:        %s\n", from)
	fmt.Fprintf(w, "  subject:     %s\n", m.Subject)
	fmt.Fprintf(w, "  date:        %s\n", date)
	fmt.Fprintf(w, "  kind:        %s\n", publisher.Classify(m, false))
	fmt.Fprintf(w, "  attachments: %d, text %d chars, %d warnings\n", len(m.Attachments), len(m.Text), len(m.Warnings))
}
