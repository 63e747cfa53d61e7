package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/mailworker/mailworker/config"
	"github.com/mailworker/mailworker/fetcher"
	"github.com/mailworker/mailworker/logging"
	"github.com/mailworker/mailworker/parser"
	"github.com/mailworker/mailworker/pipeline"
	"github.com/mailworker/mailworker/publisher"
	"github.com/mailworker/mailworker/replay"
	"github.com/mailworker/mailworker/worker"
)

// ReplayServerName is the server replayed messages are published as when
// no --server is given: a synthetic server with default flags, no
// addresses, so events go to <prefix>.replay.<token> and ids never collide
// with those of a configured server.
const ReplayServerName = "replay"

// replayServer returns the server whose naming and flags apply.
func replayServer(cfg *config.Config, name string) (config.Server, error) {
	if name == "" {
		srv := config.Server{Name: ReplayServerName}
		srv.SetDefaults()
		return srv, nil
	}
	srv, ok := findServer(cfg, name)
	if !ok {
		return config.Server{}, fmt.Errorf("--server: no server named %q in %s", name, cfg.Path)
	}
	return srv, nil
}

// directTarget publishes through the pipeline (or prints, with --dry-run).
func directTarget(ctx context.Context, env *cliEnv, f *replayFlags, logger *slog.Logger) (replay.Target, func(), error) {
	cfg, err := loadConfigOrDefaults(env, f.config)
	if err != nil {
		return nil, nil, err
	}
	srv, err := replayServer(cfg, f.server)
	if err != nil {
		return nil, nil, err
	}
	popts, err := parser.OptionsFromConfig(cfg.Parser)
	if err != nil {
		return nil, nil, fmt.Errorf("parser: %w", err)
	}
	if f.dryRun {
		return &replay.PrintTarget{W: env.stdout, Server: srv.Name, Event: dryRunEvent(srv, popts)}, func() {}, nil
	}

	// Publish the way `run` does (worker.Open: database, NATS or the
	// embedded server, stream, pipeline). When a worker with an embedded
	// server is running it owns the store: connect to it instead.
	cfg, err = useRunningWorker(cfg)
	if err != nil {
		return nil, nil, err
	}
	logs, err := logging.New(logging.Options{Writer: env.stderr, Level: "warn", Format: cfg.Log.Format})
	if err != nil {
		return nil, nil, fmt.Errorf("log: %w", err)
	}
	w, err := worker.Open(ctx, worker.Options{Config: cfg, Logs: logs, Getenv: env.getenv})
	if err != nil {
		return nil, nil, err
	}
	sink := w.Pipeline().ForServer(srv, logger)
	return &replay.SinkTarget{Sink: sink, Server: srv.Name}, func() {
		if err := w.Close(); err != nil {
			logger.Warn("close", "err", err)
		}
	}, nil
}

// dryRunEvent builds the event the pipeline would publish for a message of
// srv, without touching the ledger or NATS. Differences from a real run:
// replies recognised only through the ledger (In-Reply-To of a message
// published earlier, without a ticket reference in the subject) show as
// new_request, and duplicates are not detected.
func dryRunEvent(srv config.Server, opts parser.Options) replay.EventFunc {
	mailbox := pipeline.Mailbox(srv)
	opts = opts.ForServer(srv)
	return func(_ context.Context, msg *fetcher.Message) (any, error) {
		h := sha256.New()
		size, err := io.Copy(h, msg.Body.Open())
		if err != nil {
			return nil, fmt.Errorf("read: %w", err)
		}
		sha := hex.EncodeToString(h.Sum(nil))
		ev := &publisher.Event{
			Schema:     publisher.SchemaV1,
			ID:         publisher.EventID(srv.Name, mailbox, sha),
			Server:     srv.Name,
			Mailbox:    mailbox,
			Folder:     msg.Folder,
			Source:     msg.Ref,
			ReceivedAt: time.Now().UTC(),
			Raw:        publisher.Raw{Size: size, SHA256: sha},
		}
		// What the pipeline publishes for mail it does not parse.
		failed := func(code string, err error) (any, error) {
			ev.ID += pipeline.FailedIDSuffix
			ev.Kind = publisher.KindFailed
			ev.Error = &publisher.Failure{Code: code, Message: err.Error()}
			return ev, nil
		}
		if max := opts.MaxMessageBytes; max > 0 && size > max {
			return failed(pipeline.CodeTooLarge, fmt.Errorf("message of %d bytes is over max_message_bytes (%d); not parsed", size, max))
		}
		m, err := parser.Parse(msg.Body.Open(), opts)
		if err != nil {
			if errors.Is(err, parser.ErrRead) || errors.Is(err, parser.ErrSink) {
				return nil, err // a read error, not the message's fault: listed as failed to replay
			}
			code := pipeline.CodeParseError
			if errors.Is(err, parser.ErrEmpty) {
				code = pipeline.CodeEmpty
			}
			return failed(code, err)
		}
		ev.Message = m
		ev.Kind = publisher.Classify(m, false)
		if ev.Kind == publisher.KindNewRequest && srv.DisableNewRequests {
			from := ""
			if m.From != nil {
				from = m.From.Address
			}
			ev.Suppressed = !senderAllowed(from, srv.NewRequestAllow)
		}
		return ev, nil
	}
}

// senderAllowed reports whether from matches an address or *@domain of
// allow, case-insensitively (the rule of new_request_allow).
func senderAllowed(from string, allow []string) bool {
	from = strings.ToLower(from)
	_, domain, _ := strings.Cut(from, "@")
	for _, a := range allow {
		a = strings.ToLower(strings.TrimSpace(a))
		if a == from || (strings.HasPrefix(a, "*@") && a[2:] == domain) {
			return true
		}
	}
	return false
}
