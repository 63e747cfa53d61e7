package imaptest

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
	"github.com/emersion/go-sasl"
)

// MemOptions configures StartMem. The zero value serves one user
// "alice"/"secret" over implicit TLS with IMAP4rev2 (MOVE, UIDPLUS).
type MemOptions struct {
	// Users maps user names to passwords; each gets an empty INBOX.
	// Default {"alice": "secret"}.
	Users map[string]string
	// StartTLS also listens for plain connections that must use STARTTLS
	// before authenticating (StartTLSAddr).
	StartTLS bool
	// TokenCheck, when set, enables SASL XOAUTH2 and OAUTHBEARER; it decides
	// whether token is valid for user. It may be called concurrently.
	TokenCheck func(user, token string) bool
	// OAuthMechanisms restricts the OAuth mechanisms advertised, e.g.
	// []string{"XOAUTH2"} to look like Microsoft 365. Default both.
	OAuthMechanisms []string
	// Caps replaces the server's capabilities, e.g.
	// imap.CapSet{imap.CapIMAP4rev1: {}} for a server without MOVE and
	// UIDPLUS. Default IMAP4rev1 + IMAP4rev2.
	Caps imap.CapSet
	// NoPlain leaves AUTH=PLAIN out of the capabilities, so clients log in
	// with the LOGIN command.
	NoPlain bool
}

// MemServer is a running in-process IMAP server (go-imap's imapserver over
// imapmemserver). Its methods may be called while clients are connected.
type MemServer struct {
	opts    MemOptions
	certs   *certs
	srv     *imapserver.Server
	addr    string
	stlAddr string

	mu    sync.Mutex
	users map[string]*imapmemserver.User
}

// StartMem starts a server on 127.0.0.1 with a fresh self-signed
// certificate; it is closed at t's cleanup.
func StartMem(t testing.TB, opts MemOptions) *MemServer {
	t.Helper()
	if opts.Users == nil {
		opts.Users = map[string]string{"alice": "secret"}
	}
	if opts.Caps == nil {
		opts.Caps = imap.CapSet{imap.CapIMAP4rev1: {}, imap.CapIMAP4rev2: {}}
	}
	if opts.OAuthMechanisms == nil {
		opts.OAuthMechanisms = []string{"XOAUTH2", sasl.OAuthBearer}
	}
	m := &MemServer{opts: opts, certs: newCerts(t, t.TempDir()), users: map[string]*imapmemserver.User{}}
	for name, pw := range opts.Users {
		u := imapmemserver.NewUser(name, pw)
		if err := u.Create("INBOX", nil); err != nil {
			t.Fatalf("imaptest: create INBOX: %v", err)
		}
		m.users[name] = u
	}
	m.srv = imapserver.New(&imapserver.Options{
		NewSession: func(*imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			return &memSession{m: m}, nil, nil
		},
		Caps:      opts.Caps,
		Logger:    discardLogger{},
		TLSConfig: m.certs.serverConfig(), // STARTTLS on the plain listener
	})
	ln, err := tlsListen(m.certs)
	if err != nil {
		t.Fatalf("imaptest: listen: %v", err)
	}
	m.addr = ln.Addr().String()
	go m.srv.Serve(ln)
	if opts.StartTLS {
		pl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("imaptest: listen: %v", err)
		}
		m.stlAddr = pl.Addr().String()
		go m.srv.Serve(pl)
	}
	t.Cleanup(func() { m.srv.Close() })
	return m
}

type discardLogger struct{}

func (discardLogger) Printf(string, ...any) {}

// Addr is the implicit-TLS (imaps) address, 127.0.0.1:port.
func (m *MemServer) Addr() string { return m.addr }

// Port is the imaps port.
func (m *MemServer) Port() int { return portOf(m.addr) }

// StartTLSAddr is the STARTTLS address ("" unless MemOptions.StartTLS).
func (m *MemServer) StartTLSAddr() string { return m.stlAddr }

// StartTLSPort is the STARTTLS port (0 unless MemOptions.StartTLS).
func (m *MemServer) StartTLSPort() int { return portOf(m.stlAddr) }

// CAFile is a PEM file with the server's certificate, for tls.ca_file.
func (m *MemServer) CAFile() string { return m.certs.certFile }

// CertPool trusts the server's certificate.
func (m *MemServer) CertPool() *x509.CertPool { return m.certs.pool }

func portOf(addr string) int {
	if addr == "" {
		return 0
	}
	_, p, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(p)
	return n
}

func (m *MemServer) user(t testing.TB, name string) *imapmemserver.User {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	u := m.users[name]
	if u == nil {
		t.Fatalf("imaptest: no user %q", name)
	}
	return u
}

// CreateFolder creates folder for user (no error if it exists).
func (m *MemServer) CreateFolder(t testing.TB, user, folder string) {
	t.Helper()
	err := m.user(t, user).Create(folder, nil)
	var ie *imap.Error
	if err != nil && !(errors.As(err, &ie) && ie.Code == imap.ResponseCodeAlreadyExists) {
		t.Fatalf("imaptest: create %s: %v", folder, err)
	}
}

// Append stores raw in user's folder with flags and returns its UID.
func (m *MemServer) Append(t testing.TB, user, folder string, raw []byte, flags ...imap.Flag) imap.UID {
	t.Helper()
	data, err := m.user(t, user).Append(folder, bytes.NewReader(raw), &imap.AppendOptions{Flags: flags, Time: time.Now()})
	if err != nil {
		t.Fatalf("imaptest: append to %s: %v", folder, err)
	}
	return data.UID
}

// ResetUIDValidity deletes and re-creates user's folder with the same
// messages and flags, so it gets a new UIDVALIDITY (and new UIDs from 1).
func (m *MemServer) ResetUIDValidity(t testing.TB, user, folder string) {
	t.Helper()
	msgs := m.Messages(t, user, folder)
	u := m.user(t, user)
	if err := u.Delete(folder); err != nil {
		t.Fatalf("imaptest: delete %s: %v", folder, err)
	}
	if err := u.Create(folder, nil); err != nil {
		t.Fatalf("imaptest: create %s: %v", folder, err)
	}
	for _, msg := range msgs {
		var flags []imap.Flag
		for _, f := range msg.Flags {
			if !strings.EqualFold(string(f), `\Recent`) {
				flags = append(flags, f)
			}
		}
		m.Append(t, user, folder, msg.Body, flags...)
	}
}

// Msg is a message as stored on a server.
type Msg struct {
	UID   imap.UID
	Flags []imap.Flag
	Body  []byte
}

// Has reports whether the message carries flag.
func (m Msg) Has(flag imap.Flag) bool {
	for _, f := range m.Flags {
		if strings.EqualFold(string(f), string(flag)) {
			return true
		}
	}
	return false
}

// Messages returns the messages in user's folder (in UID order) with flags
// and bodies, read over IMAP with EXAMINE so nothing changes. It fails the
// test if the folder does not exist.
func (m *MemServer) Messages(t testing.TB, user, folder string) []Msg {
	t.Helper()
	m.mu.Lock()
	pw := m.opts.Users[user]
	m.mu.Unlock()
	c, err := imapclient.DialTLS(m.addr, &imapclient.Options{TLSConfig: m.certs.clientConfig()})
	if err != nil {
		t.Fatalf("imaptest: dial: %v", err)
	}
	defer c.Close()
	if err := c.Login(user, pw).Wait(); err != nil {
		t.Fatalf("imaptest: login %s: %v", user, err)
	}
	msgs, err := readFolder(c, folder)
	if err != nil {
		t.Fatalf("imaptest: %v", err)
	}
	return msgs
}

// UIDValidity returns the folder's UIDVALIDITY.
func (m *MemServer) UIDValidity(t testing.TB, user, folder string) uint32 {
	t.Helper()
	st, err := m.user(t, user).Status(folder, &imap.StatusOptions{UIDValidity: true})
	if err != nil {
		t.Fatalf("imaptest: status %s: %v", folder, err)
	}
	return st.UIDValidity
}

// readFolder EXAMINEs folder and fetches everything in it.
func readFolder(c *imapclient.Client, folder string) ([]Msg, error) {
	sel, err := c.Select(folder, &imap.SelectOptions{ReadOnly: true}).Wait()
	if err != nil {
		return nil, fmt.Errorf("examine %s: %w", folder, err)
	}
	if sel.NumMessages == 0 {
		return nil, nil
	}
	var set imap.SeqSet
	set.AddRange(1, 0)
	bufs, err := c.Fetch(set, &imap.FetchOptions{UID: true, Flags: true, BodySection: []*imap.FetchItemBodySection{{Peek: true}}}).Collect()
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", folder, err)
	}
	out := make([]Msg, 0, len(bufs))
	for _, b := range bufs {
		var body []byte
		if len(b.BodySection) > 0 {
			body = b.BodySection[0].Bytes
		}
		out = append(out, Msg{UID: b.UID, Flags: b.Flags, Body: body})
	}
	return out, nil
}

// memSession authenticates against the MemServer's users (LOGIN, PLAIN
// and, with a TokenCheck, XOAUTH2 and OAUTHBEARER) and then behaves as
// imapmemserver's own session.
type memSession struct {
	*imapmemserver.UserSession // nil until authenticated
	m                          *MemServer
}

var _ imapserver.SessionSASL = (*memSession)(nil)

func (s *memSession) Login(user, password string) error {
	s.m.mu.Lock()
	u := s.m.users[user]
	s.m.mu.Unlock()
	if u == nil {
		return imapserver.ErrAuthFailed
	}
	if err := u.Login(user, password); err != nil {
		return err
	}
	s.UserSession = imapmemserver.NewUserSession(u)
	return nil
}

func (s *memSession) tokenLogin(user, token string) bool {
	if s.m.opts.TokenCheck == nil || !s.m.opts.TokenCheck(user, token) {
		return false
	}
	s.m.mu.Lock()
	u := s.m.users[user]
	s.m.mu.Unlock()
	if u == nil {
		return false
	}
	s.UserSession = imapmemserver.NewUserSession(u)
	return true
}

func (s *memSession) AuthenticateMechanisms() []string {
	mechs := []string{"PLAIN"}
	if s.m.opts.NoPlain {
		mechs = nil
	}
	if s.m.opts.TokenCheck != nil {
		mechs = append(mechs, s.m.opts.OAuthMechanisms...)
	}
	return mechs
}

func (s *memSession) Authenticate(mech string) (sasl.Server, error) {
	switch {
	case mech == "PLAIN":
		return sasl.NewPlainServer(func(identity, user, password string) error {
			if identity != "" && identity != user {
				return imapserver.ErrAuthFailed
			}
			return s.Login(user, password)
		}), nil
	case mech == "XOAUTH2" && s.offers(mech):
		return &xoauth2Server{login: s.tokenLogin}, nil
	case mech == sasl.OAuthBearer && s.offers(mech):
		return sasl.NewOAuthBearerServer(func(o sasl.OAuthBearerOptions) *sasl.OAuthBearerError {
			if !s.tokenLogin(o.Username, o.Token) {
				return &sasl.OAuthBearerError{Status: "invalid_token", Schemes: "bearer", Scope: "mail"}
			}
			return nil
		}), nil
	}
	return nil, &imap.Error{Type: imap.StatusResponseTypeNo, Text: "SASL mechanism not supported"}
}

func (s *memSession) offers(mech string) bool {
	if s.m.opts.TokenCheck == nil {
		return false
	}
	for _, m := range s.m.opts.OAuthMechanisms {
		if strings.EqualFold(m, mech) {
			return true
		}
	}
	return false
}

// xoauth2Server is the server side of XOAUTH2 as Google and Dovecot do it:
// on a bad token, a JSON status challenge, then NO after the client's reply.
type xoauth2Server struct {
	login  func(user, token string) bool
	failed bool
}

func (x *xoauth2Server) Next(resp []byte) ([]byte, bool, error) {
	if x.failed {
		return nil, true, imapserver.ErrAuthFailed
	}
	if resp == nil {
		return []byte{}, false, nil
	}
	var user, token string
	for _, f := range strings.Split(string(resp), "\x01") {
		switch {
		case strings.HasPrefix(f, "user="):
			user = strings.TrimPrefix(f, "user=")
		case strings.HasPrefix(f, "auth=Bearer "):
			token = strings.TrimPrefix(f, "auth=Bearer ")
		}
	}
	if user != "" && token != "" && x.login(user, token) {
		return nil, true, nil
	}
	x.failed = true
	return []byte(`{"status":"401","schemes":"bearer","scope":"mail"}`), false, nil
}
