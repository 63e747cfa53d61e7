package scheduler

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailworker/mailworker/config"
)

// recorder is a Runner that records when each server ran and checks that no
// two runs of one server overlap.
type recorder struct {
	mu      sync.Mutex
	runs    map[string][]time.Time
	active  map[string]int
	overlap atomic.Bool
	hold    map[string]chan struct{} // a run of that server blocks until closed
}

func newRecorder() *recorder {
	return &recorder{runs: map[string][]time.Time{}, active: map[string]int{}, hold: map[string]chan struct{}{}}
}

func (r *recorder) Run(ctx context.Context, srv config.Server) error {
	r.mu.Lock()
	r.active[srv.Name]++
	if r.active[srv.Name] > 1 {
		r.overlap.Store(true)
	}
	r.runs[srv.Name] = append(r.runs[srv.Name], time.Now())
	hold := r.hold[srv.Name]
	r.mu.Unlock()
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
		}
	}
	r.mu.Lock()
	r.active[srv.Name]--
	r.mu.Unlock()
	return nil
}

func (r *recorder) count(name string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.runs[name])
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func server(name string, every time.Duration) config.Server {
	return config.Server{Name: name, Protocol: config.ProtocolIMAPS, Host: "h", FetchInterval: config.Duration(every)}
}

func TestServersRunAtTheirOwnPace(t *testing.T) {
	rec := newRecorder()
	s := New(rec, nil)
	s.Start()
	defer s.Stop(context.Background())
	if _, err := s.Apply([]config.Server{server("fast", time.Second), server("slow", 3*time.Second)}); err != nil {
		t.Fatal(err)
	}
	// Both run at once when added.
	waitFor(t, 2*time.Second, "first runs", func() bool { return rec.count("fast") >= 1 && rec.count("slow") >= 1 })
	// slow runs at 0s, 3s, 6s; by then fast has run about 7 times.
	waitFor(t, 15*time.Second, "three slow runs", func() bool { return rec.count("slow") >= 3 })
	fast, slow := rec.count("fast"), rec.count("slow")
	if fast < 2*slow {
		t.Errorf("fast ran %d times while slow ran %d; want fast at about three times the pace", fast, slow)
	}
	if rec.overlap.Load() {
		t.Error("runs of one server overlapped")
	}
}

func TestReloadTouchesOnlyChangedServers(t *testing.T) {
	rec := newRecorder()
	s := New(rec, nil)
	s.Start()
	defer s.Stop(context.Background())
	a, b := server("a", 2*time.Second), server("b", 5*time.Second)
	if _, err := s.Apply([]config.Server{a, b}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "first runs", func() bool { return rec.count("a") == 1 && rec.count("b") == 1 })
	nextB := s.Next("b")
	if nextB.IsZero() {
		t.Fatal("no next run for b")
	}

	a.FetchInterval = config.Duration(time.Second)
	ch, err := s.Apply([]config.Server{a, b})
	if err != nil {
		t.Fatal(err)
	}
	if len(ch.Changed) != 1 || ch.Changed[0] != "a" || len(ch.Unchanged) != 1 || ch.Unchanged[0] != "b" || len(ch.Added)+len(ch.Removed) != 0 {
		t.Fatalf("Apply changes = %+v; want a changed, b unchanged", ch)
	}
	if got := s.Next("b"); !got.Equal(nextB) {
		t.Errorf("b's next run moved from %v to %v on a reload that did not change b", nextB, got)
	}
	// The changed server runs at once, then every second.
	waitFor(t, 5*time.Second, "a at its new pace", func() bool { return rec.count("a") >= 4 })
	if n := rec.count("b"); n > 2 {
		t.Errorf("b ran %d times; a reload must not trigger extra runs of unchanged servers", n)
	}

	ch, err = s.Apply([]config.Server{b})
	if err != nil {
		t.Fatal(err)
	}
	if len(ch.Removed) != 1 || ch.Removed[0] != "a" {
		t.Fatalf("Apply changes = %+v; want a removed", ch)
	}
	after := rec.count("a")
	waitFor(t, 4*time.Second, "b to run again", func() bool { return rec.count("b") >= 2 })
	if n := rec.count("a"); n != after {
		t.Errorf("removed server a ran again (%d -> %d)", after, n)
	}
}

func TestChangedServerWaitsForInFlightRun(t *testing.T) {
	rec := newRecorder()
	release := make(chan struct{})
	rec.hold["a"] = release
	s := New(rec, nil)
	s.Start()
	defer s.Stop(context.Background())
	a := server("a", time.Hour)
	if _, err := s.Apply([]config.Server{a}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "first run", func() bool { return rec.count("a") == 1 })
	a.MaxPerFetch = 7 // any change
	if _, err := s.Apply([]config.Server{a}); err != nil {
		t.Fatal(err)
	}
	// The new entry's first run must wait for the held one.
	time.Sleep(300 * time.Millisecond) // give a wrong implementation the chance to start a second run
	if n := rec.count("a"); n != 1 {
		t.Fatalf("a started a second run (%d) while the first was in flight", n)
	}
	rec.mu.Lock()
	delete(rec.hold, "a")
	rec.mu.Unlock()
	close(release)
	waitFor(t, 2*time.Second, "run of the changed server", func() bool { return rec.count("a") == 2 })
	if rec.overlap.Load() {
		t.Error("runs overlapped")
	}
}

func TestPanicDoesNotStopServer(t *testing.T) {
	var n atomic.Int32
	s := New(RunnerFunc(func(ctx context.Context, srv config.Server) error {
		if n.Add(1) == 1 {
			panic("boom")
		}
		return nil
	}), nil)
	s.Start()
	defer s.Stop(context.Background())
	if _, err := s.Apply([]config.Server{server("p", time.Second)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "runs after a panic", func() bool { return n.Load() >= 3 })
}

func TestStopCancelsAfterGrace(t *testing.T) {
	rec := newRecorder()
	rec.hold["a"] = make(chan struct{}) // never released: only ctx ends it
	s := New(rec, nil)
	s.Start()
	if _, err := s.Apply([]config.Server{server("a", time.Hour)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "first run", func() bool { return rec.count("a") == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	done := make(chan struct{})
	go func() { s.Stop(ctx); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Stop did not return after its grace period")
	}
	if _, err := s.Apply([]config.Server{server("b", time.Hour)}); err == nil {
		t.Error("Apply after Stop succeeded")
	}
}

func TestApplyRefusesSubSecondInterval(t *testing.T) {
	s := New(newRecorder(), nil)
	if _, err := s.Apply([]config.Server{server("x", 10*time.Millisecond)}); err == nil {
		t.Fatal("Apply accepted a 10ms interval")
	}
}
