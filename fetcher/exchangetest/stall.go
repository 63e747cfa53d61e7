package exchangetest

import (
	"net/http"
	"sync"
)

// stall is an armed "stop mid-body" for the next matching response.
type stall struct {
	mu      sync.Mutex
	armed   map[string]int // key (EWS operation, "$value") -> body bytes to send
	release chan struct{}  // closed at cleanup
	once    sync.Once
}

func (s *stall) arm(key string, after int, cleanup func(func())) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.armed == nil {
		s.armed = map[string]int{}
		s.release = make(chan struct{})
		// Runs before the server's own Close (cleanups run last-in first-out),
		// which waits for handlers.
		cleanup(func() { s.once.Do(func() { close(s.release) }) })
	}
	s.armed[key] = after
}

// wrap returns w, or, when a stall is armed for key, a writer that sends
// the first bytes of the body, flushes them and then sends nothing more,
// holding the connection open until the client goes away.
func (s *stall) wrap(w http.ResponseWriter, r *http.Request, key string) http.ResponseWriter {
	s.mu.Lock()
	defer s.mu.Unlock()
	after, ok := s.armed[key]
	if !ok {
		return w
	}
	delete(s.armed, key)
	return &stallWriter{ResponseWriter: w, left: after, r: r, release: s.release}
}

type stallWriter struct {
	http.ResponseWriter
	left    int
	r       *http.Request
	release chan struct{}
}

func (s *stallWriter) Write(p []byte) (int, error) {
	if len(p) <= s.left {
		s.left -= len(p)
		return s.ResponseWriter.Write(p)
	}
	n, _ := s.ResponseWriter.Write(p[:s.left])
	s.left = 0
	http.NewResponseController(s.ResponseWriter).Flush()
	select {
	case <-s.r.Context().Done():
	case <-s.release:
	}
	return n, http.ErrHandlerTimeout
}

// StallResponse makes the next response to operation op (e.g. "GetItem")
// stop after after bytes of its body: headers and those bytes are sent,
// then nothing, and the connection stays open until the client closes it.
func (f *EWS) StallResponse(op string, after int) { f.stall.arm(op, after, f.t.Cleanup) }

// StallValue makes the next $value (MIME) response stop after after bytes
// of its body, as StallResponse does for EWS.
func (g *Graph) StallValue(after int) { g.stall.arm("$value", after, g.t.Cleanup) }
