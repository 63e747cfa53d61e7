package fetcher

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailworker/mailworker/config"
	"github.com/mailworker/mailworker/imaptest"
)

var errNeedsReauth = errors.New("needs re-authorisation") // stands in for oauth.ErrNeedsReauth

func TestIMAPOAuth(t *testing.T) {
	const good = "tok-GOOD-7f3a9c"
	tests := []struct {
		name          string
		mechs         []string // advertised
		configured    string   // auth.oauth.sasl
		tokens        []string
		wantErr       error
		wantRefreshes int
		wantMech      string
	}{
		{"xoauth2 valid", []string{"XOAUTH2"}, "", []string{good}, nil, 0, "XOAUTH2"},
		{"oauthbearer valid", []string{"OAUTHBEARER"}, "", []string{good}, nil, 0, "OAUTHBEARER"},
		{"both offered: oauthbearer", nil, "", []string{good}, nil, 0, "OAUTHBEARER"},
		{"both offered, xoauth2 configured", nil, "xoauth2", []string{good}, nil, 0, "XOAUTH2"},
		{"xoauth2 expired then refreshed", []string{"XOAUTH2"}, "", []string{"tok-OLD-1", good}, nil, 1, "XOAUTH2"},
		{"oauthbearer expired then refreshed", []string{"OAUTHBEARER"}, "", []string{"tok-OLD-1", good}, nil, 1, "OAUTHBEARER"},
		{"xoauth2 still rejected", []string{"XOAUTH2"}, "", []string{"tok-OLD-1", "tok-OLD-2"}, ErrAuth, 1, ""},
		{"oauthbearer still rejected", []string{"OAUTHBEARER"}, "", []string{"tok-OLD-1", "tok-OLD-2"}, ErrAuth, 1, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			var seen []string
			fx := newIMAPFixture(t, imaptest.MemOptions{
				OAuthMechanisms: tc.mechs,
				TokenCheck: func(user, token string) bool {
					mu.Lock()
					seen = append(seen, token)
					mu.Unlock()
					return user == "alice" && token == good
				},
			})
			fx.srv.Auth = config.Auth{Method: config.AuthOAuth2, OAuth: config.OAuth{SASL: tc.configured}}
			fx.srv.EmailDebug = true
			fx.creds.tokens = tc.tokens
			fx.mem.Append(t, "alice", "INBOX", testMsg(1, 0))
			im := fx.fetcher(t)
			rep, err := im.Test(ctxT(t))
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("Test() error = %v, want %v", err, tc.wantErr)
			}
			if got := fx.creds.refreshCount(); got != tc.wantRefreshes {
				t.Errorf("refreshes = %d, want %d", got, tc.wantRefreshes)
			}
			if err == nil && rep.AuthMethod != tc.wantMech {
				t.Errorf("mechanism %s, want %s", rep.AuthMethod, tc.wantMech)
			}
			mu.Lock()
			if len(seen) != len(tc.tokens) {
				t.Errorf("server saw %d token attempts, want %d", len(seen), len(tc.tokens))
			}
			mu.Unlock()
			logs := fx.logs.String()
			for _, tok := range tc.tokens {
				if strings.Contains(logs, tok) {
					t.Fatalf("token %q appears in logs", tok)
				}
			}
			if err != nil {
				for _, tok := range tc.tokens {
					if strings.Contains(err.Error(), tok) {
						t.Fatalf("token in error: %v", err)
					}
				}
			}
		})
	}

	t.Run("credentials error is wrapped", func(t *testing.T) {
		fx := newIMAPFixture(t, imaptest.MemOptions{TokenCheck: func(string, string) bool { return true }})
		fx.srv.Auth = config.Auth{Method: config.AuthOAuth2}
		fx.creds.err = fmt.Errorf("oauth server %s: %w", "test", errNeedsReauth)
		_, err := fx.fetcher(t).Fetch(ctxT(t), &recSink{})
		if !errors.Is(err, errNeedsReauth) {
			t.Fatalf("Fetch = %v, want it to wrap the credentials' sentinel", err)
		}
	})
}

func TestIMAPTranscriptRedacted(t *testing.T) {
	fx := newIMAPFixture(t, imaptest.MemOptions{})
	fx.srv.EmailDebug = true
	fx.mem.Append(t, "alice", "INBOX", testMsg(1, 0))
	if _, err := fx.fetcher(t).Fetch(ctxT(t), &recSink{}); err != nil {
		t.Fatal(err)
	}
	logs := fx.logs.String()
	for _, want := range []string{`"msg":"imap trace"`, "AUTHENTICATE PLAIN ***", "SELECT", `"msg":"imap message"`, `"decision":"acked"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("debug log lacks %q", want)
		}
	}
	if n := strings.Count(logs, fx.creds.password); n != 0 {
		t.Fatalf("password appears %d times in logs", n)
	}
	if strings.Contains(logs, "body 1") {
		t.Fatal("message body appears in the transcript")
	}

	// Without email_debug: no transcript at all.
	fx2 := newIMAPFixture(t, imaptest.MemOptions{})
	fx2.mem.Append(t, "alice", "INBOX", testMsg(1, 0))
	if _, err := fx2.fetcher(t).Fetch(ctxT(t), &recSink{}); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(fx2.logs.String(), "imap trace") {
		t.Fatal("transcript logged without email_debug")
	}
}

func TestTraceWriterRedactsLogin(t *testing.T) {
	logs := &syncBuffer{}
	fx := newIMAPFixture(t, imaptest.MemOptions{})
	_ = fx
	tw := newTraceWriter(ctxT(t), newJSONLogger(logs), "hunter2")
	// LOGIN with a quoted password, and with a literal one.
	fmt.Fprint(tw, "T1 LOGIN alice \"hunter2\"\r\nT1 OK done\r\n")
	fmt.Fprint(tw, "T2 LOGIN bob {7}\r\n+ go on\r\nxyzzy12\r\nT2 OK done\r\n")
	fmt.Fprint(tw, "T3 AUTHENTICATE XOAUTH2\r\n+ \r\ndXNlcj1ib2IBYXV0aD1CZWFyZXIgdG9rAQE=\r\n+ eyJzdGF0dXMiOiI0MDEifQ==\r\n\r\nT3 NO failed\r\n")
	out := logs.String()
	for _, secret := range []string{"hunter2", "xyzzy12", "dXNlcj1ib2IBYXV0aD1CZWFyZXIgdG9rAQE="} {
		if strings.Contains(out, secret) {
			t.Errorf("%q leaked into %s", secret, out)
		}
	}
	for _, want := range []string{"T1 LOGIN ***", "T2 OK done", "T3 AUTHENTICATE XOAUTH2", "T3 NO failed"} {
		if !strings.Contains(out, want) {
			t.Errorf("trace lacks %q: %s", want, out)
		}
	}
}

// TestTraceWriterCompletionBeforeCommand: client and server lines reach the
// trace from two goroutines, so with SASL-IR the server's "T1 OK" can be
// traced before "T1 AUTHENTICATE PLAIN <payload>". The payload stays
// hidden and the transcript goes on afterwards (it used to be redacted to
// the end of the session).
func TestTraceWriterCompletionBeforeCommand(t *testing.T) {
	logs := &syncBuffer{}
	tw := newTraceWriter(ctxT(t), newJSONLogger(logs))
	fmt.Fprint(tw, "T1 OK [CAPABILITY IMAP4rev2] PLAIN authentication successful\r\n")
	fmt.Fprint(tw, "T1 AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldHBhc3M=\r\n")
	fmt.Fprint(tw, "T2 SELECT INBOX\r\n* 3 EXISTS\r\nT2 OK [READ-WRITE] done\r\nT3 UID FETCH 1:3 (UID)\r\n")
	out := logs.String()
	if strings.Contains(out, "AGFsaWNlAHNlY3JldHBhc3M=") {
		t.Fatalf("SASL payload leaked: %s", out)
	}
	for _, want := range []string{"T1 AUTHENTICATE PLAIN ***", "T2 SELECT INBOX", "* 3 EXISTS", "T3 UID FETCH 1:3 (UID)"} {
		if !strings.Contains(out, want) {
			t.Errorf("trace lacks %q: %s", want, out)
		}
	}
}

// hangServer is a fake IMAPS server that logs in anyone, answers SELECT and
// SEARCH, and then stops answering in the middle of the message body.
func hangServer(t *testing.T, fx *imapFixture, hangAt string) string {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(fx.mem.CAFile(), strings.Replace(fx.mem.CAFile(), "cert.pem", "key.pem", 1))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	t.Cleanup(func() { close(done); ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				serveHang(c, hangAt, done)
			}()
		}
	}()
	return ln.Addr().String()
}

func serveHang(c net.Conn, hangAt string, done chan struct{}) {
	w := bufio.NewWriter(c)
	say := func(s string) { w.WriteString(s + "\r\n"); w.Flush() }
	if hangAt == "greeting" {
		<-done
		return
	}
	say("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] fake")
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			return
		}
		tag, cmd := f[0], strings.ToUpper(f[1])
		if len(f) > 2 && cmd == "UID" {
			cmd += " " + strings.ToUpper(f[2])
		}
		if cmd == hangAt || (hangAt == "BODY" && cmd == "UID FETCH" && strings.Contains(line, "BODY")) {
			if hangAt == "BODY" {
				w.WriteString("* 1 FETCH (UID 1 RFC822.SIZE 100 BODY[] {100}\r\nFrom: a@b\r\n")
				w.Flush()
			}
			<-done
			return
		}
		switch cmd {
		case "AUTHENTICATE", "LOGIN":
			say(tag + " OK [CAPABILITY IMAP4rev1] logged in")
		case "SELECT", "EXAMINE":
			say("* 1 EXISTS")
			say("* OK [UIDVALIDITY 7] ok")
			say("* OK [UIDNEXT 2] ok")
			say(tag + " OK [READ-WRITE] selected")
		case "UID SEARCH":
			say("* SEARCH 1")
			say(tag + " OK done")
		case "UID FETCH":
			say("* 1 FETCH (UID 1 RFC822.SIZE 100)")
			say(tag + " OK done")
		case "LOGOUT":
			say("* BYE")
			say(tag + " OK bye")
			return
		default:
			say(tag + " OK")
		}
	}
}

func TestIMAPTimeoutClosesHungConnection(t *testing.T) {
	for _, hangAt := range []string{"greeting", "SELECT", "UID SEARCH", "BODY"} {
		t.Run(hangAt, func(t *testing.T) {
			fx := newIMAPFixture(t, imaptest.MemOptions{})
			addr := hangServer(t, fx, hangAt)
			_, port, _ := net.SplitHostPort(addr)
			fmt.Sscan(port, &fx.srv.Port)
			fx.deps.Timeouts = Timeouts{Dial: 300 * time.Millisecond, Command: 300 * time.Millisecond, Literal: 300 * time.Millisecond}
			fx.deps.Backoff = Backoff{Attempts: 2, Min: time.Millisecond, Max: time.Millisecond}
			sink := &recSink{}
			_, err := fx.fetcher(t).Fetch(ctxT(t), sink)
			if !errors.Is(err, ErrTimeout) {
				t.Fatalf("Fetch = %v, want ErrTimeout", err)
			}
			if !strings.Contains(err.Error(), "127.0.0.1") {
				t.Errorf("error %q does not name the server", err)
			}
			if len(sink.got) != 0 {
				t.Errorf("a partial message was delivered")
			}
			if cp := fx.checkpoint(t); cp.LastUID != 0 {
				t.Errorf("checkpoint moved: %+v", cp)
			}
		})
	}
}

func TestIMAPContextCancelClosesConnection(t *testing.T) {
	fx := newIMAPFixture(t, imaptest.MemOptions{})
	addr := hangServer(t, fx, "SELECT")
	_, port, _ := net.SplitHostPort(addr)
	fmt.Sscan(port, &fx.srv.Port)
	// default timeouts (minutes): only the context can end this run
	ctx, cancel := context.WithCancel(ctxT(t))
	errc := make(chan error, 1)
	go func() {
		_, err := fx.fetcher(t).Fetch(ctx, &recSink{})
		errc <- err
	}()
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Fetch = %v, want context.Canceled", err)
	}
}

func TestIMAPStartTLSRequired(t *testing.T) {
	fx := newIMAPFixture(t, imaptest.MemOptions{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		fmt.Fprint(c, "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] plain only\r\n")
		r := bufio.NewReader(c)
		var lines []string
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				break
			}
			lines = append(lines, line)
			tag, _, _ := strings.Cut(line, " ")
			fmt.Fprintf(c, "%s BAD no STARTTLS here\r\n", tag)
		}
		got <- strings.Join(lines, "")
	}()
	fx.srv.Protocol = config.ProtocolIMAP
	fx.srv.Port = ln.Addr().(*net.TCPAddr).Port
	_, err = fx.fetcher(t).Fetch(ctxT(t), &recSink{})
	if !errors.Is(err, ErrTLSRequired) {
		t.Fatalf("Fetch = %v, want ErrTLSRequired", err)
	}
	if sent := <-got; strings.Contains(sent, fx.creds.password) || strings.Contains(strings.ToUpper(sent), "LOGIN") || strings.Contains(strings.ToUpper(sent), "AUTHENTICATE") {
		t.Fatalf("credentials sent over a plain connection: %q", sent)
	}
}
