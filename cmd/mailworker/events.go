package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mailworker/mailworker/config"
	"github.com/mailworker/mailworker/publisher"
	"github.com/mailworker/mailworker/worker"
)

func init() {
	register(&command{
		name:    "events",
		usage:   "[--server NAME] [--kind request|reply|auto|suppressed|failed] [--follow]",
		summary: "print the events in the stream as JSON lines (--follow: then wait for new ones)",
		run:     cmdEvents,
	})
}

// eventsConnectTimeout bounds connecting and reading the stream's state.
const eventsConnectTimeout = 15 * time.Second

func cmdEvents(env *cliEnv, args []string) int {
	fs := flag.NewFlagSet("events", flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	cfgPath := configFlag(fs)
	server := fs.String("server", "", "only events of server `NAME`")
	kind := fs.String("kind", "", "only events on this subject token: request, reply, auto, suppressed or failed")
	follow := fs.Bool("follow", false, "after the stored events, keep printing new ones until interrupted")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(env.stderr, "events: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	switch *kind {
	case "", publisher.SubjectRequest, publisher.SubjectReply, publisher.SubjectAuto, publisher.SubjectSuppressed, publisher.SubjectFailed:
	default:
		fmt.Fprintf(env.stderr, "events: unknown --kind %q (want request, reply, auto, suppressed or failed)\n", *kind)
		return 2
	}
	cfg, err := loadConfigOrDefaults(env, *cfgPath)
	if err != nil {
		fmt.Fprintln(env.stderr, err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger := slog.New(slog.NewTextHandler(env.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if err := printEvents(ctx, env, cfg, *server, *kind, *follow, logger); err != nil {
		fmt.Fprintln(env.stderr, "events:", err)
		return 1
	}
	return 0
}

// eventsFilter is the subject filter for --server and --kind.
func eventsFilter(cfg config.NATS, server, kind string) string {
	prefix := cfg.SubjectPrefix
	if prefix == "" {
		prefix = publisher.DefaultSubjectPrefix
	}
	if server == "" {
		server = "*"
	}
	if kind == "" {
		kind = "*"
	}
	return prefix + "." + server + "." + kind
}

// connectForCLI connects the way a CLI verb reaches the worker's broker:
// nats.url when configured; else the URL a running worker's embedded
// server wrote to data_dir/nats.url; else (no worker running) an
// in-process embedded server on data_dir/nats, returned for Shutdown.
func connectForCLI(ctx context.Context, cfg *config.Config, logger *slog.Logger) (*nats.Conn, *publisher.Embedded, error) {
	running, err := useRunningWorker(cfg)
	if err != nil {
		return nil, nil, err
	}
	var emb *publisher.Embedded
	var lock *worker.DataDirLock
	if running.NATS.URL == "" {
		// This process opens data_dir/nats itself: hold data_dir, so that
		// a `mailworker run` started meanwhile is refused rather than
		// opening the same store.
		if lock, err = worker.LockDataDir(cfg.DataDir); err != nil {
			return nil, nil, err
		}
		if emb, err = publisher.StartEmbedded(cfg.DataDir, logger); err != nil {
			lock.Release()
			return nil, nil, err
		}
		emb.OnShutdown(lock.Release)
	}
	conn, err := publisher.Connect(ctx, running.NATS, emb, logger)
	if err != nil {
		if emb != nil {
			emb.Shutdown()
		}
		if cfg.NATS.URL == "" {
			err = fmt.Errorf("%w (a stale %s/%s left by a stopped worker can be removed)", err, cfg.DataDir, publisher.URLFile)
		}
		return nil, nil, err
	}
	return conn, emb, nil
}

func printEvents(ctx context.Context, env *cliEnv, cfg *config.Config, server, kind string, follow bool, logger *slog.Logger) error {
	cctx, cancel := context.WithTimeout(ctx, eventsConnectTimeout)
	defer cancel()
	nc, emb, err := connectForCLI(cctx, cfg, logger)
	if err != nil {
		return err
	}
	defer func() {
		nc.Close()
		if emb != nil {
			emb.Shutdown()
		}
	}()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	stream := cfg.NATS.Stream
	if stream == "" {
		stream = publisher.DefaultStream
	}
	filter := eventsFilter(cfg.NATS, server, kind)
	stored, err := publisher.Pending(cctx, js, stream, filter)
	if errors.Is(err, jetstream.ErrStreamNotFound) && !follow {
		return nil // nothing published yet
	}
	if err != nil {
		return err
	}
	if stored == 0 && !follow {
		return nil
	}
	return publisher.Follow(ctx, js, stream, filter, true, func(_ *publisher.Event, m jetstream.Msg) error {
		if _, err := env.stdout.Write(append(m.Data(), '\n')); err != nil {
			return err
		}
		if follow {
			return nil
		}
		md, err := m.Metadata()
		if err != nil {
			return err
		}
		if md.NumPending == 0 {
			return publisher.ErrStop
		}
		return nil
	})
}
