// Package imaptest starts real IMAP servers for tests: an in-process
// go-imap server over memory (StartMem) and the system's Dovecot
// (StartDovecot), each with its own self-signed certificate, on free
// loopback ports, shut down at test cleanup.
//
// Servers are seeded directly (Append, SeedMaildir) and read back with
// Messages, so tests assert what a client really left in the mailbox.
package imaptest

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"
	"time"

	"github.com/mailworker/mailworker/selfsigned"
)

// certs is a self-signed certificate for localhost and 127.0.0.1, and the
// files it was written to.
type certs struct {
	*selfsigned.Cert
	certFile string // PEM certificate (also the CA file clients trust)
	keyFile  string // PEM private key
	pool     *x509.CertPool
}

func newCerts(t testing.TB, dir string) *certs {
	t.Helper()
	c, err := selfsigned.Write(dir, 24*time.Hour)
	if err != nil {
		t.Fatalf("imaptest: %v", err)
	}
	return &certs{Cert: c, certFile: c.CertFile, keyFile: c.KeyFile, pool: c.Pool}
}

func (c *certs) serverConfig() *tls.Config { return c.ServerConfig() }

func (c *certs) clientConfig() *tls.Config {
	return &tls.Config{RootCAs: c.pool, ServerName: "localhost", MinVersion: tls.VersionTLS12}
}

func tlsListen(c *certs) (net.Listener, error) {
	return tls.Listen("tcp", "127.0.0.1:0", c.serverConfig())
}
