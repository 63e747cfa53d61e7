package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/mailworker/mailworker/config"
	"github.com/mailworker/mailworker/logging"
	"github.com/mailworker/mailworker/pipeline"
	"github.com/mailworker/mailworker/storage"
	"github.com/mailworker/mailworker/worker"
)

func init() {
	register(&command{
		name:    "failed",
		usage:   "list [--server NAME] [--json] | retry [ID]",
		summary: "list unparseable mail kept raw, or parse and publish it again (all pending without ID)",
		run:     cmdFailed,
	})
}

func cmdFailed(env *cliEnv, args []string) int {
	if len(args) == 0 || (args[0] != "list" && args[0] != "retry") {
		fmt.Fprintln(env.stderr, "usage: mailworker failed list [--server NAME] [--json] | retry [ID]")
		return 2
	}
	sub := args[0]
	fs := flag.NewFlagSet("failed "+sub, flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	cfgPath := configFlag(fs)
	server := fs.String("server", "", "only failed mail of server `NAME` (list)")
	asJSON := fs.Bool("json", false, "print JSON (list)")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if (sub == "list" && fs.NArg() > 0) || fs.NArg() > 1 {
		fmt.Fprintln(env.stderr, "usage: mailworker failed list [--server NAME] [--json] | retry [ID]")
		return 2
	}
	cfg, err := loadConfigOrDefaults(env, *cfgPath)
	if err != nil {
		fmt.Fprintln(env.stderr, err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if sub == "list" {
		err = failedList(ctx, env, cfg, *server, *asJSON)
	} else {
		err = failedRetry(ctx, env, cfg, fs.Arg(0))
	}
	if err != nil {
		fmt.Fprintf(env.stderr, "failed %s: %v\n", sub, err)
		return 1
	}
	return 0
}

func failedList(ctx context.Context, env *cliEnv, cfg *config.Config, server string, asJSON bool) error {
	db, err := storage.Open(ctx, cfg.Database, cfg.DataDir)
	if err != nil {
		return err
	}
	defer db.Close()
	fs, err := pipeline.New(pipeline.Deps{DB: db}).ListFailed(ctx, server)
	if err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(env.stdout)
		enc.SetIndent("", "  ")
		if fs == nil {
			fs = []pipeline.Failed{}
		}
		return enc.Encode(fs)
	}
	if len(fs) == 0 {
		fmt.Fprintln(env.stdout, "no failed mail")
		return nil
	}
	tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSERVER\tSTATUS\tATTEMPTS\tRECEIVED\tSIZE\tRAW\tERROR")
	for _, f := range fs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%d\t%s\t%s\n", f.EventID, f.Server, f.Status, f.Attempts,
			f.CreatedAt.Local().Format(time.DateTime), f.RawSize, f.RawPath, f.Error)
	}
	return tw.Flush()
}

func failedRetry(ctx context.Context, env *cliEnv, cfg *config.Config, id string) error {
	// Publish through a running worker's embedded server when there is
	// one (it owns the store), as `replay` does.
	cfg, err := useRunningWorker(cfg)
	if err != nil {
		return err
	}
	logs, err := logging.New(logging.Options{Writer: env.stderr, Level: "warn", Format: cfg.Log.Format})
	if err != nil {
		return fmt.Errorf("log: %w", err)
	}
	w, err := worker.Open(ctx, worker.Options{Config: cfg, Logs: logs, Getenv: env.getenv})
	if err != nil {
		return err
	}
	defer w.Close()
	pipe := w.Pipeline()
	for _, srv := range cfg.Servers {
		pipe.ForServer(srv, nil)
	}
	res, err := pipe.Retry(ctx, id)
	if err != nil {
		return err
	}
	if len(res) == 0 {
		fmt.Fprintln(env.stdout, "no pending failed mail")
		return nil
	}
	failures := 0
	for _, r := range res {
		if r.Err != nil {
			failures++
			fmt.Fprintf(env.stdout, "%s\t%s\tstill failing: %v\n", r.EventID, r.Server, r.Err)
			continue
		}
		fmt.Fprintf(env.stdout, "%s\t%s\tpublished %s on %s\n", r.EventID, r.Server, r.Kind, r.Subject)
	}
	if failures > 0 {
		return fmt.Errorf("%d of %d still failing", failures, len(res))
	}
	return nil
}
