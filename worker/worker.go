// Package worker is the running service: it wires the configuration to the
// database, JetStream, the OAuth token manager, the pipeline and one
// scheduled fetcher per server, and applies configuration reloads.
//
// Package cmd/mailworker stays thin: `run`, `demo` and the tests all drive
// a Worker.
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/nats-io/nats.go"

	"github.com/mailworker/mailworker/config"
	"github.com/mailworker/mailworker/fetcher"
	"github.com/mailworker/mailworker/logging"
	"github.com/mailworker/mailworker/oauth"
	"github.com/mailworker/mailworker/parser"
	"github.com/mailworker/mailworker/pipeline"
	"github.com/mailworker/mailworker/publisher"
	"github.com/mailworker/mailworker/scheduler"
	"github.com/mailworker/mailworker/secret"
	"github.com/mailworker/mailworker/storage"
)

// ErrPaused is recorded for a run skipped because NATS is unreachable:
// nothing is fetched, so nothing can be marked or checkpointed early.
var ErrPaused = errors.New("paused: NATS unreachable")

// ShutdownGrace is how long Run waits for fetches in flight on shutdown
// before cancelling them.
const ShutdownGrace = 30 * time.Second

// Options configure Open.
type Options struct {
	// Config is the validated configuration. Required.
	Config *config.Config
	// Logs builds the loggers; nil logs at info to stderr.
	Logs *logging.Factory
	// Getenv resolves *_env keys and MAILWORKER_SECRET_KEY; nil is os.Getenv.
	Getenv func(string) string
	// EmbeddedListen is where the embedded NATS server (nats.url empty)
	// accepts TCP clients such as `mailworker events`; "" keeps it
	// in-process only, "127.0.0.1:0" picks a free port. A taken address is
	// an error (publisher.ErrListenInUse). Clients need the token of
	// nats.token_env / nats.token_file when one is set, and a non-loopback
	// address is refused without one.
	EmbeddedListen string
	// Exclusive holds the lock on data_dir (LockDataDir) while the worker
	// is open, as `mailworker run` does, even with an external nats.url.
	// An embedded NATS server always takes it: it owns data_dir/nats.
	Exclusive bool
	// HTTPClient is used for OAuth token endpoints; nil is a default client.
	HTTPClient *http.Client
	// DeleteChangedTokens is set by `mailworker run` only: a stored OAuth
	// token whose settings changed is deleted (after a log line naming the
	// server and the changed settings) instead of only being refused.
	DeleteChangedTokens bool
}

// Worker is the running service. Its methods are safe for concurrent use.
type Worker struct {
	logs   *logging.Factory
	logger *slog.Logger
	getenv func(string) string

	lock     *DataDirLock
	db       *sqlx.DB
	embedded *publisher.Embedded
	nc       *nats.Conn
	pub      *publisher.Publisher
	pipe     *pipeline.Pipeline
	tokens   *oauth.Manager
	cps      *fetcher.Checkpoints
	sched    *scheduler.Scheduler

	mu      sync.Mutex
	cfg     *config.Config
	lastErr map[string]string // last error logged per server, to log changes only
}

// Open connects everything the configuration names: the database (and its
// migrations), the secret key, NATS (starting the embedded server when no
// URL is set) and the JetStream stream. Close releases it all.
func Open(ctx context.Context, o Options) (_ *Worker, err error) {
	cfg := o.Config
	if cfg == nil {
		return nil, errors.New("worker: no config")
	}
	logs := o.Logs
	if logs == nil {
		if logs, err = logging.New(logging.Options{}); err != nil {
			return nil, err
		}
	}
	w := &Worker{logs: logs, logger: logs.Logger(), getenv: o.Getenv, cfg: cfg, lastErr: map[string]string{}}
	defer func() {
		if err != nil {
			w.Close()
		}
	}()
	if o.Exclusive || cfg.NATS.URL == "" {
		if w.lock, err = LockDataDir(cfg.DataDir); err != nil {
			return nil, err
		}
	}
	// data_dir/tmp holds spooled message bodies and attachments on their
	// way to the Object Store.
	if err := os.MkdirAll(filepath.Join(cfg.DataDir, "tmp"), 0o700); err != nil {
		return nil, fmt.Errorf("data_dir: %w", err)
	}
	if w.db, err = storage.Open(ctx, cfg.Database, cfg.DataDir); err != nil {
		return nil, err
	}
	box, err := secret.LoadKey(cfg.DataDir, cfg.Secrets.KeyFile, o.Getenv, w.logger)
	if err != nil {
		return nil, err
	}
	if cfg.NATS.URL == "" {
		var eo []publisher.EmbeddedOption
		if o.EmbeddedListen != "" {
			tok, err := publisher.EmbeddedToken(cfg.NATS, o.Getenv, true, w.logger)
			if err != nil {
				return nil, err
			}
			if host, _, err := net.SplitHostPort(o.EmbeddedListen); err == nil && tok == "" && !isLoopbackHost(host) {
				return nil, fmt.Errorf("nats.listen: %s is not a loopback address; set nats.token_env or nats.token_file so clients need a token", o.EmbeddedListen)
			}
			eo = append(eo, publisher.WithListen(o.EmbeddedListen), publisher.WithToken(tok))
		}
		if w.embedded, err = publisher.StartEmbedded(cfg.DataDir, w.logger, eo...); err != nil {
			return nil, err
		}
	}
	if w.nc, err = publisher.Connect(ctx, cfg.NATS, w.embedded, w.logger); err != nil {
		return nil, err
	}
	if w.pub, err = publisher.New(ctx, w.nc, cfg.NATS, w.logger); err != nil {
		return nil, err
	}
	popts, err := parser.OptionsFromConfig(cfg.Parser)
	if err != nil {
		return nil, fmt.Errorf("parser: %w", err)
	}
	deps := pipeline.Deps{DB: w.db, Publisher: w.pub, Parser: popts, DataDir: cfg.DataDir, Logger: w.logger}
	if cfg.NATS.AttachmentsBucket != "" {
		objs, err := publisher.NewObjects(ctx, w.pub.JetStream(), cfg.NATS.AttachmentsBucket, filepath.Join(cfg.DataDir, "tmp"))
		if err != nil {
			return nil, err
		}
		deps.Attachments = objs
	}
	w.pipe = pipeline.New(deps)
	w.tokens = oauth.New(w.db, box, w.logger, o.HTTPClient)
	if o.Getenv != nil {
		w.tokens.SetGetenv(o.Getenv)
	}
	w.tokens.SetServers(cfg.Servers)
	w.tokens.SetDeleteChangedTokens(o.DeleteChangedTokens)
	w.cps = fetcher.NewCheckpoints(w.db)
	w.sched = scheduler.New(scheduler.RunnerFunc(w.runServer), w.logger)
	return w, nil
}

// Config returns the configuration in force.
func (w *Worker) Config() *config.Config {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.cfg
}

// DB, Publisher, Pipeline and Tokens expose the parts for the CLI and tests.
func (w *Worker) DB() *sqlx.DB                    { return w.db }
func (w *Worker) Publisher() *publisher.Publisher { return w.pub }
func (w *Worker) Pipeline() *pipeline.Pipeline    { return w.pipe }
func (w *Worker) Tokens() *oauth.Manager          { return w.tokens }

// NATSURL is the URL a separate process can reach the broker at ("" when
// the embedded server is in-process only).
func (w *Worker) NATSURL() string {
	if w.embedded != nil {
		return w.embedded.URL()
	}
	return w.Config().NATS.URL
}

// Start schedules every server (each runs once at once, then at its
// interval).
func (w *Worker) Start() error {
	w.sched.Start()
	ch, err := w.sched.Apply(w.Config().Servers)
	if err != nil {
		return err
	}
	w.logger.Info("scheduled", "servers", len(ch.Added))
	return nil
}

// Stop stops scheduling and waits for runs in flight (cancelling them
// when ctx ends).
func (w *Worker) Stop(ctx context.Context) { w.sched.Stop(ctx) }

// Reload applies a new, validated configuration: servers added, removed or
// changed take effect without touching the others; a run in flight
// finishes first. Settings that need a restart (database, nats, data_dir,
// secrets) are refused with an error and the old configuration stays.
func (w *Worker) Reload(cfg *config.Config) (scheduler.Changes, error) {
	old := w.Config()
	if !reflect.DeepEqual(old.Database, cfg.Database) || !reflect.DeepEqual(old.NATS, cfg.NATS) ||
		old.DataDir != cfg.DataDir || !reflect.DeepEqual(old.Secrets, cfg.Secrets) || !reflect.DeepEqual(old.Parser, cfg.Parser) {
		return scheduler.Changes{}, errors.New("reload: database, nats, data_dir, secrets and parser settings need a restart; configuration not applied")
	}
	w.tokens.SetServers(cfg.Servers)
	ch, err := w.sched.Apply(cfg.Servers)
	if err != nil {
		return ch, err
	}
	w.mu.Lock()
	w.cfg = cfg
	w.mu.Unlock()
	w.logger.Info("configuration reloaded", "added", ch.Added, "removed", ch.Removed, "changed", ch.Changed)
	return ch, nil
}

// RunOnce fetches every server until its mailbox is drained (or a run
// fails), without scheduling, and returns the first error.
func (w *Worker) RunOnce(ctx context.Context) error {
	var first error
	for _, srv := range w.Config().Servers {
		for {
			st, err := w.fetch(ctx, srv)
			if err != nil {
				if first == nil {
					first = fmt.Errorf("server %s: %w", srv.Name, err)
				}
				break
			}
			if !st.More || ctx.Err() != nil {
				break
			}
		}
	}
	return first
}

// runServer is the scheduler's Runner.
func (w *Worker) runServer(ctx context.Context, srv config.Server) error {
	_, err := w.fetch(ctx, srv)
	return err
}

// fetch runs one fetch of srv and records its outcome.
func (w *Worker) fetch(ctx context.Context, srv config.Server) (fetcher.Stats, error) {
	logger := w.logs.Server(srv.Name, srv.EmailDebug)
	started := time.Now()
	var st fetcher.Stats
	var err error
	if !w.pub.Healthy() {
		err = ErrPaused
	} else {
		st, err = w.fetchWith(ctx, srv, logger)
	}
	if rerr := w.pipe.RecordRun(context.WithoutCancel(ctx), srv.Name, started, w.sched.Next(srv.Name), err); rerr != nil {
		logger.Error("record run", "err", rerr)
	}
	w.logOutcome(logger, srv, st, err, time.Since(started))
	return st, err
}

func (w *Worker) fetchWith(ctx context.Context, srv config.Server, logger *slog.Logger) (fetcher.Stats, error) {
	f, err := fetcher.New(srv, fetcher.Deps{
		Checkpoints: w.cps,
		Credentials: w.tokens.Credentials(srv),
		Logger:      logger,
		SpoolDir:    filepath.Join(w.Config().DataDir, "tmp"),
	})
	if err != nil {
		return fetcher.Stats{}, err
	}
	st, err := f.Fetch(ctx, w.pipe.ForServer(srv, logger))
	if cerr := f.Close(); cerr != nil && err == nil {
		logger.Debug("close fetcher", "err", cerr)
	}
	return st, err
}

// logOutcome logs a run: deliveries at info, an error at error level only
// when it differs from the server's previous one (a dead token or an
// unreachable server logs once, not every interval), recovery at info.
func (w *Worker) logOutcome(logger *slog.Logger, srv config.Server, st fetcher.Stats, err error, took time.Duration) {
	w.mu.Lock()
	prev := w.lastErr[srv.Name]
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	w.lastErr[srv.Name] = msg
	w.mu.Unlock()
	switch {
	case err != nil && msg != prev:
		attrs := []any{"err", err, "delivered", st.Delivered}
		if errors.Is(err, oauth.ErrNeedsReauth) || errors.Is(err, oauth.ErrNoToken) {
			attrs = append(attrs, "action", "run `mailworker oauth authorize --server "+srv.Name+"`")
		}
		logger.Error("fetch failed", attrs...)
	case err != nil:
		logger.Debug("fetch failed again", "err", err)
	case prev != "":
		logger.Info("fetch recovered", "delivered", st.Delivered)
	}
	if st.Delivered > 0 {
		logger.Info("fetched", "messages", st.Delivered, "bytes", st.Bytes, "took_ms", took.Milliseconds(), "more", st.More)
	}
}

// Close releases everything Open acquired. Call Stop first.
func (w *Worker) Close() error {
	if w.pub != nil {
		w.pub.Close()
	}
	if w.nc != nil {
		w.nc.Close()
	}
	if w.embedded != nil {
		w.embedded.Shutdown()
	}
	var err error
	if w.db != nil {
		err = w.db.Close()
	}
	w.lock.Release()
	return err
}

func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
