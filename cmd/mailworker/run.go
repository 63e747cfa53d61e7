package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/mailworker/mailworker/config"
	"github.com/mailworker/mailworker/logging"
	"github.com/mailworker/mailworker/worker"
)

func init() {
	register(&command{
		name:    "run",
		usage:   "[--once]",
		summary: "fetch every configured server at its interval until SIGINT/SIGTERM (SIGHUP or a file change reloads)",
		run:     cmdRun,
	})
}

func cmdRun(env *cliEnv, args []string) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	cfgPath := configFlag(fs)
	once := fs.Bool("once", false, "fetch every server until its mailbox is drained, then exit (for an external scheduler)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	path := resolveConfigPath(env, *cfgPath)
	cfg, err := loadConfig(env, *cfgPath)
	if err != nil {
		fmt.Fprintln(env.stderr, err)
		return 1
	}
	logs, err := newLogs(env, cfg)
	if err != nil {
		fmt.Fprintln(env.stderr, err)
		return 1
	}
	logger := logs.Logger()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	w, err := worker.Open(ctx, worker.Options{Config: cfg, Logs: logs, Getenv: env.getenv, EmbeddedListen: embeddedListen(cfg),
		DeleteChangedTokens: true, Exclusive: true})
	if err != nil {
		logger.Error("start", "err", err)
		return 1
	}
	defer w.Close()

	if *once {
		if err := w.RunOnce(ctx); err != nil {
			logger.Error("run --once", "err", err)
			return 1
		}
		return 0
	}

	if err := w.Start(); err != nil {
		logger.Error("start", "err", err)
		return 1
	}
	// The admin listener is a convenience: whatever keeps it from
	// starting is logged and fetching goes on.
	if _, err := w.ServeAdmin(ctx, env.getenv); err != nil {
		logger.Error("admin listener not started; fetching continues", "err", err)
	}
	reload := func(why string) {
		next, err := loadConfig(env, *cfgPath)
		if err != nil {
			logger.Error("reload rejected; the previous configuration keeps running", "trigger", why, "errors", err.Error())
			return
		}
		if _, err := w.Reload(next); err != nil {
			logger.Error("reload rejected; the previous configuration keeps running", "trigger", why, "err", err)
		}
	}
	if _, err := os.Stat(path); err == nil {
		if err := worker.WatchFile(ctx, path, logger, func() { reload("file changed") }); err != nil {
			logger.Warn("cannot watch the config file; reload with SIGHUP", "err", err)
		}
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	logger.Info("mailworker running", "config", path, "servers", len(cfg.Servers), "nats", w.NATSURL())
	for {
		select {
		case <-hup:
			reload("SIGHUP")
		case <-ctx.Done():
			logger.Info("shutting down; waiting for fetches in flight", "grace", worker.ShutdownGrace)
			gctx, cancel := context.WithTimeout(context.Background(), worker.ShutdownGrace)
			w.Stop(gctx)
			cancel()
			return 0
		}
	}
}

// newLogs builds the loggers for cfg, writing to the verb's stderr.
func newLogs(env *cliEnv, cfg *config.Config) (*logging.Factory, error) {
	f, err := logging.New(logging.Options{Writer: env.stderr, Level: cfg.Log.Level, Format: cfg.Log.Format})
	if err != nil {
		return nil, errors.New("log: " + err.Error())
	}
	return f, nil
}

// embeddedListen is where the embedded NATS server accepts other processes:
// nats.listen, by default 127.0.0.1:4222.
func embeddedListen(cfg *config.Config) string {
	if cfg.NATS.Listen != "" {
		return cfg.NATS.Listen
	}
	return config.DefaultNATSListen
}
