package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/mailworker/mailworker/oauth"
	"github.com/mailworker/mailworker/worker"
)

func init() {
	register(&command{
		name:    "status",
		usage:   "[--json]",
		summary: "per server: last and next run, counts, last error, token state",
		run:     cmdStatus,
	})
}

func cmdStatus(env *cliEnv, args []string) int {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	cfgPath := configFlag(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := loadConfig(env, *cfgPath)
	if err != nil {
		fmt.Fprintln(env.stderr, err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sts, err := worker.ReadStatus(ctx, cfg, env.getenv)
	if err != nil {
		fmt.Fprintln(env.stderr, "status:", err)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(env.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(sts); err != nil {
			return 1
		}
		return 0
	}
	printStatus(env.stdout, sts, time.Now())
	return 0
}

func printStatus(out io.Writer, sts []worker.ServerStatus, now time.Time) {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVER\tPROTOCOL\tEVERY\tLAST RUN\tNEXT RUN\tFETCHED\tPUBLISHED\tSUPPRESSED\tFAILED\tDUPLICATES\tTOKEN\tLAST ERROR")
	for _, s := range sts {
		last, next, lastErr := "never", "-", ""
		var fetched, published, suppressed, failed, dups int64
		if r := s.Run; r != nil {
			last = ago(r.LastRunAt, now)
			if r.NextRunAt != nil {
				next = r.NextRunAt.Local().Format("15:04:05")
			}
			fetched, published, suppressed, failed, dups = r.Fetched, r.Published, r.Suppressed, r.Failed, r.Duplicates
			lastErr = r.LastError
		}
		token := "-"
		if t := s.Token; t != nil {
			token = t.State
			if t.State == oauth.StateSettingsChanged {
				token += ": re-authorize"
			}
			if t.Expiry != nil && t.State == "valid" {
				token += " until " + t.Expiry.Local().Format("15:04")
			}
			if lastErr == "" && t.LastError != "" {
				lastErr = t.LastError
			}
		}
		if lastErr == "" {
			lastErr = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%s\t%s\n",
			s.Server, s.Protocol, s.Interval, last, next, fetched, published, suppressed, failed, dups, token, lastErr)
	}
	tw.Flush()
}

func ago(t *time.Time, now time.Time) string {
	if t == nil {
		return "never"
	}
	return now.Sub(*t).Round(time.Second).String() + " ago"
}
