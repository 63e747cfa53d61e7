package fetcher

import (
	"bytes"
	"context"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"sync"
)

// maxTraceLine caps one logged transcript line.
const maxTraceLine = 1000

// traceRedacted replaces credentials in transcripts.
const traceRedacted = "***"

// traceWriter turns imapclient's raw DebugWriter stream into debug log lines
// with credentials removed. It is a line-oriented filter with three layers of
// protection, because the stream interleaves both directions:
//
//   - the arguments of LOGIN and AUTHENTICATE are replaced by ***;
//   - from such a command until its tagged completion every other line
//     (continuations, base64 SASL data, literal passwords) is replaced by ***;
//   - any known secret (password, token) left anywhere is replaced by ***.
//
// Message bodies (FETCH literals) are not logged, only their size.
type traceWriter struct {
	ctx     context.Context
	log     *slog.Logger
	secrets []string

	mu      sync.Mutex
	line    []byte
	skip    int64  // literal bytes still to drop
	authTag string // tag of the LOGIN/AUTHENTICATE in progress

	completed map[string]bool // tags whose completion was traced
}

func newTraceWriter(ctx context.Context, log *slog.Logger, secrets ...string) *traceWriter {
	t := &traceWriter{ctx: ctx, log: log, completed: map[string]bool{}}
	for _, s := range secrets {
		if s != "" {
			t.secrets = append(t.secrets, s)
		}
	}
	return t
}

func (t *traceWriter) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		if t.skip > 0 {
			k := min(int64(len(p)), t.skip)
			t.skip -= k
			p = p[k:]
			continue
		}
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			t.line = append(t.line, p...)
			if len(t.line) > 64<<10 { // no newline for long: flush what we have
				t.emit()
			}
			break
		}
		t.line = append(t.line, p[:i]...)
		p = p[i+1:]
		t.emit()
	}
	return n, nil
}

var (
	authCmd      = regexp.MustCompile(`(?i)^(\S+) (LOGIN|AUTHENTICATE)\b`)
	taggedStatus = regexp.MustCompile(`(?i)^([^*+\s]\S*) (?:OK|NO|BAD)\b`)
	fetchLit     = regexp.MustCompile(`(?i)^\* \d+ FETCH .*\{(\d+)\}$`)
	literalEnd   = regexp.MustCompile(`\{(\d+)\+?\}$`)
)

func (t *traceWriter) emit() {
	line := strings.TrimRight(string(t.line), "\r")
	t.line = t.line[:0]
	// Client and server lines reach this writer from two goroutines, so
	// the tagged completion of an AUTHENTICATE can be traced before the
	// command itself. Any tagged completion ends auth mode (commands are
	// not pipelined while authenticating), and a command whose completion
	// was already seen does not start it.
	if m := taggedStatus.FindStringSubmatch(line); m != nil {
		t.completed[m[1]] = true
		if len(t.completed) > 64 {
			clear(t.completed)
			t.completed[m[1]] = true
		}
		t.authTag = ""
	}
	switch {
	case t.authTag != "" && strings.HasPrefix(line, "* "):
		// untagged server data is no secret
	case t.authTag != "":
		line = traceRedacted
	default:
		if m := authCmd.FindStringSubmatchIndex(line); m != nil {
			if tag := line[m[2]:m[3]]; !t.completed[tag] {
				t.authTag = tag
			}
			rest := line[m[5]:]
			if strings.EqualFold(line[m[4]:m[5]], "AUTHENTICATE") {
				// keep the mechanism name, drop the initial response
				f := strings.Fields(rest)
				if len(f) > 0 {
					line = line[:m[5]] + " " + f[0]
					if len(f) > 1 {
						line += " " + traceRedacted
					}
				}
			} else {
				line = line[:m[5]] + " " + traceRedacted
			}
		} else if m := fetchLit.FindStringSubmatch(line); m != nil {
			if n, err := strconv.ParseInt(m[1], 10, 64); err == nil {
				t.skip = n
				line += " [" + m[1] + " bytes not logged]"
			}
		} else if literalEnd.MatchString(line) && strings.Contains(strings.ToUpper(line), "APPEND") {
			// an APPEND literal is a whole message: not logged either
			m := literalEnd.FindStringSubmatch(line)
			if n, err := strconv.ParseInt(m[1], 10, 64); err == nil {
				t.skip = n
			}
		}
	}
	for _, s := range t.secrets {
		line = strings.ReplaceAll(line, s, traceRedacted)
	}
	if len(line) > maxTraceLine {
		line = line[:maxTraceLine] + "…"
	}
	t.log.DebugContext(t.ctx, "imap trace", "line", line)
}
