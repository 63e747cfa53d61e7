package fetcher

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/jmoiron/sqlx"

	"github.com/mailworker/mailworker/config"
	"github.com/mailworker/mailworker/imaptest"
	"github.com/mailworker/mailworker/storage"
	"github.com/mailworker/mailworker/storage/storagetest"
)

// dovecotServer is the config of a fetcher for user alice on d.
func dovecotServer(d *imaptest.Dovecot) config.Server {
	return config.Server{
		Name: "dc", Protocol: config.ProtocolIMAPS, Host: "127.0.0.1", Port: d.Port(),
		TLS: config.TLS{CAFile: d.CAFile()}, Username: "alice", Folder: "INBOX",
		Auth: config.Auth{Method: config.AuthPassword},
	}
}

func TestDovecotFetchMoveAndCheckpoint(t *testing.T) {
	storagetest.ForEachDriver(t, func(t *testing.T, db *sqlx.DB) {
		const pw = "dc-Pa55-w0rd!"
		d := imaptest.StartDovecot(t, imaptest.DovecotOptions{Users: map[string]string{"alice": pw}})
		var msgs [][]byte
		for i := 1; i <= 20; i++ {
			msgs = append(msgs, testMsg(i, 0))
		}
		d.SeedMaildir("alice", "INBOX", msgs[:15])
		d.SeedMaildirFlags("alice", "INBOX", msgs[15:], "S") // already read: still delivered
		d.SeedMaildir("alice", "Processed", nil)

		logs := &syncBuffer{}
		srv := dovecotServer(d)
		srv.EmailDebug = true
		srv.AfterFetch = config.AfterFetch{Action: config.ActionMove, Folder: "Processed"}
		srv.MaxPerFetch = 12
		cps := NewCheckpoints(db)
		im, err := NewIMAP(srv, Deps{Checkpoints: cps, Credentials: &testCreds{password: pw}, Logger: newJSONLogger(logs), SpoolDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		ctx := ctxT(t)
		sink := &recSink{}
		st, err := im.Fetch(ctx, sink)
		if err != nil {
			t.Fatal(err)
		}
		if st.Delivered != 12 || !st.More || st.Seen != 20 {
			t.Fatalf("first run %+v", st)
		}
		if st, err = im.Fetch(ctx, sink); err != nil || st.Delivered != 8 || st.More {
			t.Fatalf("second run %+v, %v", st, err)
		}
		if len(sink.got) != 20 {
			t.Fatalf("delivered %d, want 20", len(sink.got))
		}
		delivered := map[string]bool{}
		for _, m := range sink.got {
			delivered[string(m.Body)] = true
		}
		for i, m := range msgs {
			if !delivered[string(m)] {
				t.Errorf("message %d not delivered", i+1)
			}
		}
		if n := len(d.Messages("alice", "INBOX")); n != 0 {
			t.Errorf("INBOX still has %d messages after move", n)
		}
		if n := len(d.Messages("alice", "Processed")); n != 20 {
			t.Errorf("Processed has %d messages, want 20", n)
		}
		cp, err := cps.Get(ctx, "dc", "INBOX")
		if err != nil || cp.LastUID != 20 || cp.UIDValidity == 0 {
			t.Fatalf("checkpoint %+v, %v", cp, err)
		}
		if strings.Contains(logs.String(), pw) {
			t.Fatal("password in logs")
		}
		if !strings.Contains(logs.String(), "AUTHENTICATE PLAIN ***") {
			t.Error("no traceRedacted transcript in debug logs")
		}
	})
}

func TestDovecotReconnectAfterRestart(t *testing.T) {
	d := imaptest.StartDovecot(t, imaptest.DovecotOptions{Users: map[string]string{"alice": "pw"}})
	var msgs [][]byte
	for i := 1; i <= 6; i++ {
		msgs = append(msgs, testMsg(i, 0))
	}
	d.SeedMaildir("alice", "INBOX", msgs)
	srv := dovecotServer(d)
	cps := NewCheckpoints(storagetest.Open(t, storage.SQLite))
	im, err := NewIMAP(srv, Deps{Checkpoints: cps, Credentials: &testCreds{password: "pw"},
		Backoff: Backoff{Attempts: 3, Min: 50 * time.Millisecond, Max: 200 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	sink := &restartSink{d: d}
	st, err := im.Fetch(ctxT(t), sink)
	if err != nil {
		t.Fatalf("Fetch across a server restart: %v", err)
	}
	if st.Delivered != 6 || !sink.restarted {
		t.Fatalf("Stats %+v restarted=%v", st, sink.restarted)
	}
	// The interrupted run's messages were delivered again after the
	// reconnect (the pipeline drops the duplicates).
	if n := len(sink.uids()); n <= 6 {
		t.Fatalf("sink got %d deliveries; want the first ones repeated after the reconnect", n)
	}
	for _, m := range d.Messages("alice", "INBOX") {
		if !m.Has(imap.FlagSeen) {
			t.Errorf("uid %d not \\Seen", m.UID)
		}
	}
}

// restartSink restarts Dovecot while the first FETCH is streaming.
type restartSink struct {
	recSink
	d         *imaptest.Dovecot
	restarted bool
}

func (s *restartSink) Deliver(ctx context.Context, m *Message) (Ack, error) {
	if !s.restarted {
		s.restarted = true
		s.d.Restart()
	}
	return s.recSink.Deliver(ctx, m)
}

func TestDovecotOAuth(t *testing.T) {
	const good = "dc-token-GOOD-91"
	var mu sync.Mutex
	var asked []string
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok := r.PostFormValue("token")
		mu.Lock()
		asked = append(asked, tok)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if tok == good {
			json.NewEncoder(w).Encode(map[string]any{"active": true, "username": "alice"})
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"active": false})
	}))
	defer idp.Close()
	d := imaptest.StartDovecot(t, imaptest.DovecotOptions{IntrospectionURL: idp.URL + "/introspect"})
	d.SeedMaildir("alice", "INBOX", [][]byte{testMsg(1, 0)})
	for _, mech := range []string{"xoauth2", "oauthbearer"} {
		t.Run(mech, func(t *testing.T) {
			logs := &syncBuffer{}
			srv := dovecotServer(d)
			srv.Auth = config.Auth{Method: config.AuthOAuth2, OAuth: config.OAuth{SASL: mech}}
			srv.EmailDebug = true
			creds := &testCreds{tokens: []string{"dc-token-EXPIRED", good}}
			im, err := NewIMAP(srv, Deps{Credentials: creds, Logger: newJSONLogger(logs)})
			if err != nil {
				t.Fatal(err)
			}
			rep, err := im.Test(ctxT(t))
			if err != nil {
				t.Fatalf("Test: %v", err)
			}
			if creds.refreshCount() != 1 || !strings.EqualFold(rep.AuthMethod, mech) || rep.Messages != 1 || rep.Pending != -1 {
				t.Fatalf("refreshes %d, report %+v", creds.refreshCount(), rep)
			}
			if strings.Contains(logs.String(), "dc-token-") {
				t.Fatal("token in logs")
			}

			bad := &testCreds{tokens: []string{"dc-token-OLD1", "dc-token-OLD2"}}
			im, err = NewIMAP(srv, Deps{Credentials: bad})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := im.Test(ctxT(t)); !errors.Is(err, ErrAuth) {
				t.Fatalf("Test with rejected tokens = %v, want ErrAuth", err)
			}
		})
	}
}
