package fetcher

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-sasl"

	"github.com/mailworker/mailworker/config"
	"github.com/mailworker/mailworker/imaptest"
	"github.com/mailworker/mailworker/storage"
	"github.com/mailworker/mailworker/storage/storagetest"
)

// noSASLIRCaps is a Dovecot capability without SASL-IR (so the client sends
// its SASL response on a line of its own, after a continuation) and without
// LITERAL+ (so a password that needs a literal waits for a continuation).
const noSASLIRCaps = "IMAP4rev1 LOGIN-REFERRALS ID ENABLE IDLE"

// secretForms lists what must never appear in a log for secret: the secret,
// its base64 encodings, and the SASL messages that embed it, encoded.
func secretForms(user, secret string) []string {
	forms := []string{secret}
	payloads := [][]byte{[]byte(secret)}
	for _, c := range []sasl.Client{
		sasl.NewPlainClient("", user, secret),
		&xoauth2Client{user: user, token: secret},
		sasl.NewOAuthBearerClient(&sasl.OAuthBearerOptions{Username: user, Token: secret, Host: "127.0.0.1", Port: 993}),
	} {
		_, ir, err := c.Start()
		if err != nil {
			panic(err)
		}
		payloads = append(payloads, ir)
	}
	for _, p := range payloads {
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
			forms = append(forms, enc.EncodeToString(p))
		}
	}
	return forms
}

var b64RunTest = regexp.MustCompile(`[A-Za-z0-9+/_=-]{4,}`)

// assertNoSecret fails when logs hold secret in any form: the listed forms,
// or any base64 run that decodes (at any alignment, either alphabet) to
// bytes containing it.
func assertNoSecret(t *testing.T, logs, user, secret string) {
	t.Helper()
	for _, f := range secretForms(user, secret) {
		if strings.Contains(logs, f) {
			t.Fatalf("secret form %q in log:\n%s", f, logs)
		}
	}
	for _, run := range b64RunTest.FindAllString(logs, -1) {
		for _, enc := range []*base64.Encoding{base64.RawStdEncoding, base64.RawURLEncoding} {
			r := strings.TrimRight(run, "=")
			for off := 0; off < 4 && off < len(r); off++ {
				p := r[off:]
				if len(p)%4 == 1 {
					p = p[:len(p)-1]
				}
				if b, err := enc.DecodeString(p); err == nil && strings.Contains(string(b), secret) {
					t.Fatalf("base64 run %q decodes to the secret; log:\n%s", run, logs)
				}
			}
		}
	}
}

// traceLines returns the "line" values of the log's imap trace records.
func traceLines(t *testing.T, logs string) []string {
	t.Helper()
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(logs), "\n") {
		var rec struct{ Msg, Line string }
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		if rec.Msg == "imap trace" {
			out = append(out, rec.Line)
		}
	}
	return out
}

// TestEmailDebugWithoutSASLIR logs in many times to a Dovecot that offers no
// SASL-IR, with PLAIN, with the LOGIN command (a password sent as a
// synchronizing literal) and with XOAUTH2, with email_debug on. The client's
// SASL response goes out after a continuation, and is traced from another
// goroutine than the server's tagged OK, in either order. Each transcript
// must hold no form of the secret, and still show the commands after login.
func TestEmailDebugWithoutSASLIR(t *testing.T) {
	rounds := 200
	if testing.Short() {
		rounds = 20
	}
	const (
		user     = "alice"
		plainPW  = "Pl41n-secret-Zq9"
		loginPW  = "lögin-sécret-Zq9" // 8-bit: sent as a literal
		goodTok  = "ya29.tok-GOOD-Zq9xY"
		failedPW = "wrong-secret-Zq9"
	)
	introspect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		w.Header().Set("Content-Type", "application/json")
		if r.PostForm.Get("token") == goodTok {
			fmt.Fprintf(w, `{"active":true,"username":%q}`, user)
			return
		}
		fmt.Fprint(w, `{"active":false}`)
	}))
	defer introspect.Close()

	dovecot := func(opts imaptest.DovecotOptions) func(t *testing.T) config.Server {
		return func(t *testing.T) config.Server {
			opts.Capability = noSASLIRCaps
			d := imaptest.StartDovecot(t, opts)
			d.SeedMaildir(user, "INBOX", [][]byte{testMsg(1, 0)})
			return dovecotServer(d)
		}
	}
	cases := []struct {
		name     string
		start    func(t *testing.T) config.Server
		auth     config.Auth
		secret   string
		wantMech string
		wantErr  bool
	}{
		{"plain", dovecot(imaptest.DovecotOptions{Users: map[string]string{user: plainPW}}),
			config.Auth{Method: config.AuthPassword}, plainPW, mechPlain, false},
		{"xoauth2", dovecot(imaptest.DovecotOptions{IntrospectionURL: introspect.URL}),
			config.Auth{Method: config.AuthOAuth2, OAuth: config.OAuth{SASL: "xoauth2"}}, goodTok, mechXOAuth2, false},
		{"plain rejected", dovecot(imaptest.DovecotOptions{Users: map[string]string{user: plainPW}}),
			config.Auth{Method: config.AuthPassword}, failedPW, "", true},
		// Dovecot implements the LOGIN command with PLAIN, so the LOGIN
		// command is tested on go-imap's server without AUTH=PLAIN (and,
		// IMAP4rev2 only, without SASL-IR).
		{"login command", func(t *testing.T) config.Server {
			m := imaptest.StartMem(t, imaptest.MemOptions{Users: map[string]string{user: loginPW}, NoPlain: true,
				Caps: imap.CapSet{imap.CapIMAP4rev2: {}}})
			return config.Server{Name: "mem", Protocol: config.ProtocolIMAPS, Host: "127.0.0.1", Port: m.Port(),
				TLS: config.TLS{CAFile: m.CAFile()}, Username: user, Folder: "INBOX"}
		}, config.Auth{Method: config.AuthPassword}, loginPW, mechLogin, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := tc.start(t)
			srv.EmailDebug = true
			srv.Auth = tc.auth
			cps := NewCheckpoints(storagetest.Open(t, storage.SQLite))
			n := rounds
			if tc.wantErr {
				n = 2 // Dovecot delays every failed login by 2s
			}
			for i := range n {
				logs := &syncBuffer{}
				im, err := NewIMAP(srv, Deps{
					Checkpoints: cps, Credentials: &testCreds{password: tc.secret, tokens: []string{tc.secret}},
					Logger: newJSONLogger(logs), SpoolDir: t.TempDir(), Backoff: Backoff{Attempts: 1},
				})
				if err != nil {
					t.Fatal(err)
				}
				rep, err := im.Test(ctxT(t))
				im.Close()
				out := logs.String()
				assertNoSecret(t, out, user, tc.secret)
				lines := traceLines(t, out)
				if i == 0 {
					caps := strings.Join(lines, "\n")
					if strings.Contains(caps, "SASL-IR") {
						t.Fatalf("server still offers SASL-IR:\n%s", caps)
					}
				}
				if tc.wantErr {
					if err == nil {
						t.Fatal("login with a wrong password succeeded")
					}
					continue
				}
				if err != nil {
					t.Fatalf("round %d: %v\n%s", i, err, out)
				}
				if rep.AuthMethod != tc.wantMech {
					t.Fatalf("mechanism %s, want %s", rep.AuthMethod, tc.wantMech)
				}
				// The transcript goes on after authentication.
				var status, examine bool
				for _, l := range lines {
					status = status || strings.Contains(l, " STATUS INBOX")
					examine = examine || strings.Contains(l, " EXAMINE INBOX")
				}
				if !status || !examine {
					t.Fatalf("round %d: transcript after login redacted or missing:\n%s", i, strings.Join(lines, "\n"))
				}
			}
		})
	}
}

// traceLine is one line of a scripted exchange, with the causal order
// imapclient guarantees: a client line is traced after the server line
// that prompted it (reads are traced before they are parsed), and a server
// line answering client line i is traced after client line i-1 (a write
// is traced right after it went out, before the next write).
type traceLine struct {
	text  string
	after int // client lines: server index it waits for; server lines: client index traced first; -1 none
}

// interleavings calls f with every order of client and server lines that
// respects the causal constraints.
func interleavings(client, server []traceLine, f func([]string)) int {
	n := 0
	var rec func(ci, si int, seq []string)
	rec = func(ci, si int, seq []string) {
		if ci == len(client) && si == len(server) {
			n++
			f(seq)
			return
		}
		if ci < len(client) && client[ci].after < si {
			rec(ci+1, si, append(seq[:len(seq):len(seq)], client[ci].text))
		}
		if si < len(server) && server[si].after < ci {
			rec(ci, si+1, append(seq[:len(seq):len(seq)], server[si].text))
		}
	}
	rec(0, 0, nil)
	return n
}

// TestTraceWriterEveryOrder replays login exchanges without SASL-IR (PLAIN,
// XOAUTH2, OAUTHBEARER, LOGIN with a synchronizing literal, LOGIN with
// LITERAL+, a rejected XOAUTH2) into the trace writer in every order the
// two goroutines can produce, and checks that no form of the secret is
// logged and that the commands after login are.
func TestTraceWriterEveryOrder(t *testing.T) {
	const user, secret = "alice", "s3cret-Tok-ZZ9"
	enc := func(c sasl.Client) string {
		_, ir, _ := c.Start()
		return base64.StdEncoding.EncodeToString(ir)
	}
	type script struct {
		name           string
		client, server []traceLine
	}
	// Client indexes: 0 command, 1.. responses; server "after" values
	// refer to them.
	scripts := []script{
		{"plain", []traceLine{{"T1 AUTHENTICATE PLAIN", -1}, {enc(sasl.NewPlainClient("", user, secret)), 0}},
			[]traceLine{{"+ ", -1}, {"T1 OK [CAPABILITY IMAP4rev1] Logged in", 0}}},
		{"xoauth2", []traceLine{{"T1 AUTHENTICATE XOAUTH2", -1}, {enc(&xoauth2Client{user: user, token: secret}), 0}},
			[]traceLine{{"+ ", -1}, {"T1 OK Logged in", 0}}},
		{"oauthbearer", []traceLine{{"T1 AUTHENTICATE OAUTHBEARER", -1},
			{enc(sasl.NewOAuthBearerClient(&sasl.OAuthBearerOptions{Username: user, Token: secret, Host: "imap.example.com", Port: 993})), 0}},
			[]traceLine{{"+ ", -1}, {"T1 OK Logged in", 0}}},
		{"login sync literal", []traceLine{{"T1 LOGIN alice {14}", -1}, {secret, 0}},
			[]traceLine{{"+ OK", -1}, {"T1 OK Logged in", 0}}},
		{"login literal+", []traceLine{{"T1 LOGIN alice {14+}", -1}, {secret, -1}},
			[]traceLine{{"T1 OK Logged in", 0}}},
		{"xoauth2 challenge then ok", []traceLine{{"T1 AUTHENTICATE XOAUTH2", -1}, {enc(&xoauth2Client{user: user, token: secret}), 0}, {"", 1}},
			[]traceLine{{"+ ", -1}, {"+ eyJzdGF0dXMiOiI0MDEifQ==", 0}, {"T1 NO [AUTHENTICATIONFAILED] failed", 1}}},
	}
	for _, sc := range scripts {
		t.Run(sc.name, func(t *testing.T) {
			client := append([]traceLine{}, sc.client...)
			server := append([]traceLine{}, sc.server...)
			// After login: T2 is sent once T1's completion was read,
			// T3 once T2's was; their completions follow the command
			// before them.
			last := len(server) - 1
			client = append(client, traceLine{"T2 STATUS INBOX (MESSAGES)", last},
				traceLine{"T3 EXAMINE INBOX", last + 2})
			server = append(server, traceLine{"* 1 EXISTS", len(client) - 3}, traceLine{"T2 OK done", len(client) - 3},
				traceLine{"T3 OK [READ-ONLY] done", len(client) - 2})
			n := interleavings(client, server, func(seq []string) {
				logs := &syncBuffer{}
				// Without the secret registered: the protocol-aware
				// layer alone must hide it.
				tw := newTraceWriter(ctxT(t), newJSONLogger(logs))
				for _, l := range seq {
					fmt.Fprint(tw, l+"\r\n")
				}
				out := logs.String()
				assertNoSecret(t, out, user, secret)
				for _, want := range []string{"T2 STATUS INBOX (MESSAGES)", "T3 EXAMINE INBOX", "* 1 EXISTS", "T3 OK [READ-ONLY] done"} {
					if !strings.Contains(out, want) {
						t.Fatalf("order %q: trace lacks %q:\n%s", seq, want, out)
					}
				}
			})
			if n < 5 {
				t.Fatalf("only %d orders", n)
			}
		})
	}
}

// TestTraceWriterBase64Secret: the last-resort filter also catches a
// secret's base64 forms in a line the protocol-aware layer let through.
func TestTraceWriterBase64Secret(t *testing.T) {
	const user, secret = "alice", "hunter2-long-token"
	for _, f := range secretForms(user, secret) {
		logs := &syncBuffer{}
		tw := newTraceWriter(ctxT(t), newJSONLogger(logs), secret)
		fmt.Fprint(tw, "* OK stray "+f+" end\r\n")
		out := logs.String()
		assertNoSecret(t, out, user, secret)
		if !strings.Contains(out, "* OK stray") || !strings.Contains(out, " end") {
			t.Fatalf("surrounding text lost: %s", out)
		}
	}
}
