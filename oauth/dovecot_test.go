package oauth_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailworker/mailworker/config"
	"github.com/mailworker/mailworker/fetcher"
	"github.com/mailworker/mailworker/imaptest"
	"github.com/mailworker/mailworker/oauth"
	"github.com/mailworker/mailworker/oauth/oauthtest"
	"github.com/mailworker/mailworker/storage"
	"github.com/mailworker/mailworker/storage/storagetest"
)

// memSink keeps delivered bodies; its acks complete at once.
type memSink struct {
	mu  sync.Mutex
	got []string
}

type doneAck struct{}

func (doneAck) Wait(context.Context) error { return nil }

func (s *memSink) Deliver(_ context.Context, m *fetcher.Message) (fetcher.Ack, error) {
	b, err := io.ReadAll(m.Body.Open())
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got = append(s.got, string(b))
	return doneAck{}, nil
}

func testMail(user string, round int) []byte {
	return []byte(fmt.Sprintf("From: customer@example.test\r\nTo: %s@example.test\r\nSubject: round %d\r\nMessage-ID: <r%d-%s@example.test>\r\nDate: Wed, 25 Nov 2026 06:00:00 +0000\r\n\r\nround %d for %s\r\n", user, round, round, user, round, user))
}

// TestDovecotOAuthEndToEnd fetches over IMAPS from a real Dovecot whose
// oauth2 passdb validates tokens at oauthtest's introspection endpoint:
// alice with XOAUTH2, bob with OAUTHBEARER, across access token expiries
// and refresh token rotations with the Manager re-created each round, then
// alice's grant is revoked: only alice needs re-authorization.
func TestDovecotOAuthEndToEnd(t *testing.T) {
	db := storagetest.Open(t, storage.SQLite)
	e := newEnv(t, db, oauthtest.Options{AccessTokenLifetime: time.Hour})
	d := imaptest.StartDovecot(t, imaptest.DovecotOptions{IntrospectionURL: e.idp.IntrospectURL()})

	servers := map[string]config.Server{}
	for _, u := range []struct{ user, sasl string }{{"alice", "xoauth2"}, {"bob", "oauthbearer"}} {
		srv := e.server(u.user, config.FlowPKCE, u.user)
		srv.Port, srv.TLS, srv.Folder = d.Port(), config.TLS{CAFile: d.CAFile()}, "INBOX"
		srv.Auth.OAuth.SASL = u.sasl
		servers[u.user] = srv
		d.SeedMaildir(u.user, "INBOX", nil)
		e.authorize(srv)
	}
	cps := fetcher.NewCheckpoints(db)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	fetch := func(m *oauth.Manager, user string) (*memSink, error) {
		srv := servers[user]
		f, err := fetcher.NewIMAP(srv, fetcher.Deps{Checkpoints: cps, Credentials: m.Credentials(srv), Logger: e.logger(), SpoolDir: t.TempDir(),
			Backoff: fetcher.Backoff{Attempts: 1}})
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		sink := &memSink{}
		_, err = f.Fetch(ctx, sink)
		return sink, err
	}

	// Each server logs in with its own mechanism.
	for user, srv := range servers {
		f, err := fetcher.NewIMAP(srv, fetcher.Deps{Credentials: e.m.Credentials(srv)})
		if err != nil {
			t.Fatal(err)
		}
		rep, err := f.Test(ctx)
		f.Close()
		if err != nil || !strings.EqualFold(rep.AuthMethod, srv.Auth.OAuth.SASL) {
			t.Fatalf("Test %s: %+v, %v; want auth method %s", user, rep, err, srv.Auth.OAuth.SASL)
		}
	}

	const rounds = 4 // three expiries, three rotations after the first round
	for round := 0; round < rounds; round++ {
		m := e.manager() // a worker restart
		for user := range servers {
			d.SeedMaildir(user, "INBOX", [][]byte{testMail(user, round)})
			sink, err := fetch(m, user)
			if err != nil {
				t.Fatalf("round %d: fetch %s: %v", round, user, err)
			}
			if len(sink.got) != 1 || !strings.Contains(sink.got[0], fmt.Sprintf("round %d for %s", round, user)) {
				t.Fatalf("round %d: %s delivered %q", round, user, sink.got)
			}
		}
		if got, want := e.idp.Counts().Refresh, 2*round; got != want {
			t.Fatalf("round %d: %d refreshes, want %d (one per server per expiry)", round, got, want)
		}
		// Expire every access token, at the provider and for the Manager.
		e.clock.Advance(time.Hour)
	}

	// Tokens that die early at the provider: Dovecot refuses the cached
	// token, the fetcher asks for a refresh, and the fetch goes through.
	e.idp.ExpireAccessTokens()
	before := e.idp.Counts().Refresh
	for user := range servers {
		d.SeedMaildir(user, "INBOX", [][]byte{testMail(user, 100)})
		if sink, err := fetch(e.manager(), user); err != nil || len(sink.got) != 1 {
			t.Fatalf("%s after early expiry: %d delivered, %v", user, len(sink.got), err)
		}
	}
	if got := e.idp.Counts().Refresh - before; got != 2 {
		t.Fatalf("%d refreshes after early expiry, want 2", got)
	}

	// Alice withdraws consent: her next refresh gets invalid_grant.
	e.clock.Advance(time.Hour)
	e.idp.RevokeUser("alice")
	m := e.manager()
	d.SeedMaildir("alice", "INBOX", [][]byte{testMail("alice", rounds)})
	d.SeedMaildir("bob", "INBOX", [][]byte{testMail("bob", rounds)})
	if _, err := fetch(m, "alice"); !errors.Is(err, oauth.ErrNeedsReauth) {
		t.Fatalf("fetch alice after revocation = %v, want ErrNeedsReauth", err)
	}
	refreshes := e.idp.Counts().Refresh
	if _, err := fetch(m, "alice"); !errors.Is(err, oauth.ErrNeedsReauth) {
		t.Fatalf("second fetch alice = %v, want ErrNeedsReauth", err)
	}
	if sink, err := fetch(m, "bob"); err != nil || len(sink.got) != 1 {
		t.Fatalf("bob after alice's revocation: %d delivered, %v", len(sink.got), err)
	}
	if got := e.idp.Counts().Refresh; got != refreshes+1 {
		t.Fatalf("%d refreshes after alice's grant died, want only bob's", got-refreshes)
	}
	sts, err := m.Status(ctx, []config.Server{servers["alice"], servers["bob"]})
	if err != nil {
		t.Fatal(err)
	}
	if sts[0].State != oauth.StateNeedsReauth || sts[1].State != oauth.StateValid {
		t.Fatalf("status = %+v", sts)
	}
	if e.idp.Counts().Introspect == 0 {
		t.Fatal("Dovecot never asked the introspection endpoint")
	}
	// Re-authorizing alice brings her back.
	e.authorize(servers["alice"])
	if sink, err := fetch(e.manager(), "alice"); err != nil || len(sink.got) != 1 {
		t.Fatalf("alice after re-authorization: %d delivered, %v", len(sink.got), err)
	}
}
