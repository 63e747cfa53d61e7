// Package scheduler runs each configured server's fetch at its own interval,
// with robfig/cron/v3: one cron entry per server, plus one run as soon as the
// server is added.
//
// Runs of one server never overlap: cron's SkipIfStillRunning drops a tick
// while the entry's previous run is still going, and a per-server lock keeps
// a run of a changed server's new entry waiting until the old entry's
// in-flight run has finished (a reload never cuts a fetch short). Recover
// sits inside SkipIfStillRunning so a panicking run does not leave its entry
// skipping forever.
//
// Apply takes the whole new list of servers and touches only what changed:
// an unchanged server keeps its entry and its schedule.
package scheduler

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"sort"
	"sync"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/mailworker/mailworker/config"
)

// Runner performs one fetch run of a server. The scheduler never calls Run
// concurrently for the same server name.
type Runner interface {
	Run(ctx context.Context, srv config.Server) error
}

// RunnerFunc adapts a function to Runner.
type RunnerFunc func(ctx context.Context, srv config.Server) error

// Run calls f.
func (f RunnerFunc) Run(ctx context.Context, srv config.Server) error { return f(ctx, srv) }

// Scheduler owns the cron entries. Its methods are safe for concurrent use.
type Scheduler struct {
	runner Runner
	logger *slog.Logger
	cron   *cron.Cron

	ctx    context.Context // cancelled by Stop when the grace period ends
	cancel context.CancelFunc

	mu      sync.Mutex
	entries map[string]*entry
	locks   map[string]*sync.Mutex // per server name; survives entry changes
	wg      sync.WaitGroup         // runs started outside cron (the first run)
	stopped bool
}

type entry struct {
	srv config.Server
	id  cron.EntryID
}

// New returns a stopped scheduler; call Start, then Apply.
func New(runner Runner, logger *slog.Logger) *Scheduler {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cl := cronLogger{logger}
	ctx, cancel := context.WithCancel(context.Background())
	return &Scheduler{
		runner: runner,
		logger: logger,
		cron: cron.New(
			cron.WithChain(cron.SkipIfStillRunning(cl), cron.Recover(cl)),
			cron.WithLogger(cl),
		),
		ctx:     ctx,
		cancel:  cancel,
		entries: map[string]*entry{},
		locks:   map[string]*sync.Mutex{},
	}
}

// Start starts the cron loop.
func (s *Scheduler) Start() { s.cron.Start() }

// Changes says what an Apply did, by server name.
type Changes struct {
	Added, Removed, Changed, Unchanged []string
}

// Apply makes the schedule match servers: new servers get an entry and an
// immediate first run; removed servers lose theirs (a run in flight
// finishes); changed servers (any field differs) get a new entry and a run,
// which waits for the old entry's in-flight run; unchanged servers are left
// exactly as they were. Intervals are not validated here (config.Validate
// refuses short ones in files; tests may schedule every second), but an
// interval under one second is an error.
func (s *Scheduler) Apply(servers []config.Server) (Changes, error) {
	for _, srv := range servers {
		if srv.FetchInterval.D() < time.Second {
			return Changes{}, fmt.Errorf("scheduler: server %s: fetch interval %s is under 1s", srv.Name, srv.FetchInterval)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return Changes{}, fmt.Errorf("scheduler: stopped")
	}
	var ch Changes
	want := map[string]bool{}
	for _, srv := range servers {
		want[srv.Name] = true
		old, ok := s.entries[srv.Name]
		switch {
		case !ok:
			ch.Added = append(ch.Added, srv.Name)
		case reflect.DeepEqual(old.srv, srv):
			ch.Unchanged = append(ch.Unchanged, srv.Name)
			continue
		default:
			ch.Changed = append(ch.Changed, srv.Name)
			s.cron.Remove(old.id)
		}
		s.add(srv)
	}
	for name, e := range s.entries {
		if !want[name] {
			s.cron.Remove(e.id)
			delete(s.entries, name)
			ch.Removed = append(ch.Removed, name)
		}
	}
	sort.Strings(ch.Removed)
	return ch, nil
}

// add schedules srv and starts its first run; s.mu is held.
func (s *Scheduler) add(srv config.Server) {
	lock := s.locks[srv.Name]
	if lock == nil {
		lock = &sync.Mutex{}
		s.locks[srv.Name] = lock
	}
	job := cron.FuncJob(func() { s.runOnce(srv, lock) })
	id := s.cron.Schedule(cron.Every(srv.FetchInterval.D()), job)
	s.entries[srv.Name] = &entry{srv: srv, id: id}
	// The first run goes through the entry's wrapped job, so a cron tick
	// that comes while it is still running is skipped like any other.
	wrapped := s.cron.Entry(id).WrappedJob
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		wrapped.Run()
	}()
}

func (s *Scheduler) runOnce(srv config.Server, lock *sync.Mutex) {
	lock.Lock()
	defer lock.Unlock()
	if s.ctx.Err() != nil {
		return
	}
	if err := s.runner.Run(s.ctx, srv); err != nil {
		s.logger.Debug("run ended with error", "server", srv.Name, "err", err)
	}
}

// Next returns when server name runs next (zero when unknown).
func (s *Scheduler) Next(name string) time.Time {
	s.mu.Lock()
	e, ok := s.entries[name]
	s.mu.Unlock()
	if !ok {
		return time.Time{}
	}
	return s.cron.Entry(e.id).Next
}

// Servers returns the scheduled servers' names, sorted.
func (s *Scheduler) Servers() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	names := make([]string, 0, len(s.entries))
	for n := range s.entries {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Stop stops scheduling and waits for runs in flight until ctx is done;
// then it cancels them (their context is cancelled) and waits for them to
// return. A cancelled run loses nothing: it has not checkpointed what it has
// not acknowledged.
func (s *Scheduler) Stop(ctx context.Context) {
	s.mu.Lock()
	s.stopped = true
	s.mu.Unlock()
	cronDone := s.cron.Stop()
	all := make(chan struct{})
	go func() {
		<-cronDone.Done()
		s.wg.Wait()
		close(all)
	}()
	select {
	case <-all:
	case <-ctx.Done():
		s.logger.Warn("shutdown grace period over; cancelling runs in flight")
		s.cancel()
		<-all
	}
	s.cancel()
}

// cronLogger routes cron's own messages (skips, panics) to slog.
type cronLogger struct{ l *slog.Logger }

func (c cronLogger) Info(msg string, kv ...any) {
	if msg == "skip" {
		c.l.Debug("fetch still running; tick skipped")
		return
	}
	c.l.Debug("cron: "+msg, kv...)
}

func (c cronLogger) Error(err error, msg string, kv ...any) {
	c.l.Error("cron: "+msg, append(kv, "err", err)...)
}
