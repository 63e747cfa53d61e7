package fetcher

import (
	"bytes"
	"context"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"github.com/mailworker/mailworker/logging"
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
//   - from such a command until the client's last line of the exchange every
//     line but the server's untagged data and tagged completion (that is:
//     continuations, base64 SASL responses, literal passwords) is replaced
//     by ***;
//   - any known secret (password, token) left anywhere, and every base64
//     form of it, is replaced by *** (logging.Redactor).
//
// The end of an exchange needs care. imapclient traces what it reads and
// what it writes from two goroutines, and a written line is traced after it
// went out, so the server's tagged OK can be traced before the client's
// last SASL response (on a server without SASL-IR) or even before the
// command itself. So the exchange ends only when both are seen: the tagged
// completion, and as many client lines after the command as the server
// asked for (one per "+" continuation of that command, one per literal the
// command announced).
//
// Message bodies (FETCH literals) are not logged, only their size.
type traceWriter struct {
	ctx    context.Context
	log    *slog.Logger
	redact *logging.Redactor

	mu   sync.Mutex
	line []byte
	skip int64 // literal bytes still to drop

	// The LOGIN/AUTHENTICATE exchange in progress (authTag != "").
	authTag  string
	authDone bool // its tagged completion was traced
	authCont int  // continuations the server sent for it (known once authDone)
	authLits int  // literals the client announced on its lines
	authResp int  // client lines traced after the command line

	conts     int            // continuations since the last tagged completion
	completed map[string]int // tags whose completion was traced -> their continuations
}

func newTraceWriter(ctx context.Context, log *slog.Logger, secrets ...string) *traceWriter {
	return &traceWriter{ctx: ctx, log: log, redact: logging.NewRedactor(secrets...), completed: map[string]int{}}
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
	switch {
	case strings.HasPrefix(line, "+"):
		// A continuation request (server): during an exchange the client
		// owes one more line.
		t.conts++
		if t.authTag != "" {
			line = "+ " + traceRedacted
		}
	case strings.HasPrefix(line, "* "):
		// untagged server data is no secret; message bodies are not logged
		if m := fetchLit.FindStringSubmatch(line); m != nil {
			if n, err := strconv.ParseInt(m[1], 10, 64); err == nil {
				t.skip = n
				line += " [" + m[1] + " bytes not logged]"
			}
		}
	case taggedStatus.MatchString(line) && (t.authTag == "" || t.authDone || strings.HasPrefix(line, t.authTag+" ")):
		// A tagged completion (server). Commands are not pipelined while
		// authenticating, so the continuations since the previous
		// completion were this command's.
		tag := taggedStatus.FindStringSubmatch(line)[1]
		if len(t.completed) > 64 {
			clear(t.completed)
		}
		t.completed[tag] = t.conts
		if tag == t.authTag {
			t.authDone, t.authCont = true, t.conts
		}
		t.conts = 0
	case t.authTag != "":
		// A client line inside the exchange: a SASL response, a literal
		// password, the rest of a LOGIN.
		t.authResp++
		if literalEnd.MatchString(line) {
			t.authLits++
		}
		line = traceRedacted
	default:
		if m := authCmd.FindStringSubmatchIndex(line); m != nil {
			tag := line[m[2]:m[3]]
			t.authTag, t.authResp, t.authLits = tag, 0, 0
			t.authCont, t.authDone = 0, false
			if c, ok := t.completed[tag]; ok { // completion traced first
				t.authDone, t.authCont = true, c
			}
			if literalEnd.MatchString(line) {
				t.authLits++
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
		} else if literalEnd.MatchString(line) && strings.Contains(strings.ToUpper(line), "APPEND") {
			// an APPEND literal is a whole message: not logged either
			m := literalEnd.FindStringSubmatch(line)
			if n, err := strconv.ParseInt(m[1], 10, 64); err == nil {
				t.skip = n
			}
		}
	}
	// The exchange is over once the server has completed it and the client
	// has sent every line it owed.
	if t.authTag != "" && t.authDone && t.authResp >= max(t.authCont, t.authLits) {
		t.authTag = ""
	}
	line = t.redact.Redact(line)
	if len(line) > maxTraceLine {
		line = line[:maxTraceLine] + "…"
	}
	t.log.DebugContext(t.ctx, "imap trace", "line", line)
}
