package selfsigned

import (
	"crypto/tls"
	"io"
	"os"
	"testing"
	"time"
)

func TestHandshakeWithPool(t *testing.T) {
	c, err := Write(t.TempDir(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(c.KeyFile); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode: %v %v", st.Mode(), err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", c.ServerConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			// The write completes the server side of the handshake (or
			// fails it, for a client that rejects the certificate).
			conn.Write([]byte("hello"))
			conn.Close()
		}
	}()
	conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: c.Pool, ServerName: "localhost"})
	if err != nil {
		t.Fatalf("verified handshake failed: %v", err)
	}
	b, _ := io.ReadAll(conn)
	conn.Close()
	if string(b) != "hello" {
		t.Fatalf("read %q", b)
	}
	// An unrelated certificate must not verify.
	other, err := Write(t.TempDir(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: other.Pool, ServerName: "localhost"}); err == nil {
		t.Fatal("handshake verified against the wrong certificate")
	}
}
