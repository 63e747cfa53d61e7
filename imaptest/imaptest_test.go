package imaptest

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"testing"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"
)

func msg(i int) []byte {
	return []byte(fmt.Sprintf("From: a@example.test\r\nSubject: m%d\r\nMessage-ID: <%d@example.test>\r\n\r\nbody %d\r\n", i, i, i))
}

func TestMemServer(t *testing.T) {
	m := StartMem(t, MemOptions{StartTLS: true, TokenCheck: func(u, tok string) bool { return tok == "good" }})
	m.Append(t, "alice", "INBOX", msg(1), imap.FlagSeen)
	m.Append(t, "alice", "INBOX", msg(2))
	got := m.Messages(t, "alice", "INBOX")
	if len(got) != 2 || !got[0].Has(imap.FlagSeen) || got[1].Has(imap.FlagSeen) || !bytes.Equal(got[1].Body, msg(2)) {
		t.Fatalf("Messages = %+v", got)
	}
	v := m.UIDValidity(t, "alice", "INBOX")
	m.ResetUIDValidity(t, "alice", "INBOX")
	if m.UIDValidity(t, "alice", "INBOX") == v || len(m.Messages(t, "alice", "INBOX")) != 2 {
		t.Fatal("ResetUIDValidity")
	}
	// STARTTLS port refuses login before TLS, accepts OAUTHBEARER after it.
	c, err := imapclient.DialStartTLS(m.StartTLSAddr(), &imapclient.Options{TLSConfig: &tls.Config{RootCAs: m.CertPool(), ServerName: "localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Authenticate(sasl.NewOAuthBearerClient(&sasl.OAuthBearerOptions{Username: "alice", Token: "good"})); err != nil {
		t.Fatalf("OAUTHBEARER: %v", err)
	}
}

func TestDovecot(t *testing.T) {
	d := StartDovecot(t, DovecotOptions{Users: map[string]string{"alice": "pw1"}})
	d.SeedMaildir("alice", "INBOX", [][]byte{msg(1), msg(2)})
	d.SeedMaildirFlags("alice", "INBOX", [][]byte{msg(3)}, "S")
	d.SeedMaildir("alice", "Processed", nil)
	c, err := imapclient.DialTLS(d.Addr(), &imapclient.Options{TLSConfig: &tls.Config{RootCAs: d.certs.pool, ServerName: "localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Login("alice", "pw1").Wait(); err != nil {
		t.Fatal(err)
	}
	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil || sel.NumMessages != 3 {
		t.Fatalf("SELECT = %+v, %v", sel, err)
	}
	if _, err := c.Select("Processed", nil).Wait(); err != nil {
		t.Fatalf("SELECT Processed: %v", err)
	}
	c.Logout().Wait()
	c.Close()
	got := d.Messages("alice", "INBOX")
	if len(got) != 3 || got[0].UID != 1 || !got[2].Has(imap.FlagSeen) || got[0].Has(imap.FlagSeen) {
		t.Fatalf("Messages = %+v", got)
	}
	d.Restart()
	if got := d.Messages("alice", "INBOX"); len(got) != 3 {
		t.Fatalf("after restart %d messages", len(got))
	}
	c, err = imapclient.DialStartTLS(d.StartTLSAddr(), &imapclient.Options{TLSConfig: &tls.Config{RootCAs: d.certs.pool, ServerName: "localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login("alice", "pw1").Wait(); err != nil {
		t.Fatalf("login after STARTTLS: %v", err)
	}
}
