package publisher

import (
	"context"
	"errors"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mailworker/mailworker/config"
)

func TestEmbeddedListenTaken(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().String()
	start := time.Now()
	e, err := StartEmbedded(t.TempDir(), testLogger(t), WithListen(addr))
	if err == nil {
		e.Shutdown()
		t.Fatalf("started on taken %s", addr)
	}
	if !errors.Is(err, ErrListenInUse) {
		t.Fatalf("err = %v, want ErrListenInUse", err)
	}
	for _, want := range []string{addr, "nats.listen", "MAILWORKER_NATS_LISTEN", "127.0.0.1:0"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	if d := time.Since(start); d > embeddedReadyTimeout {
		t.Errorf("took %v: the error should come before the readiness wait", d)
	}
}

func TestEmbeddedToken(t *testing.T) {
	const tok = "tok-3b9f-Embedded"
	dir := t.TempDir()
	logger := testLogger(t)
	e, err := StartEmbedded(dir, logger, WithListen("127.0.0.1:0"), WithToken(tok))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown()
	if strings.Contains(e.URL(), tok) {
		t.Fatalf("URL() reveals the token: %s", e.URL())
	}
	fileURL, err := ReadURLFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	if u, err := url.Parse(fileURL); err != nil || u.User.Username() != tok {
		t.Fatalf("nats.url %q lacks the token", fileURL)
	}
	if st, _ := os.Stat(filepath.Join(dir, URLFile)); st.Mode().Perm() != 0o600 {
		t.Fatalf("nats.url mode %v", st.Mode().Perm())
	}
	if nc, err := nats.Connect(e.URL(), nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Fatal("connected without the token")
	} else if !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("without the token: %v, want an authorization error", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for name, conn := range map[string]func() (*nats.Conn, error){
		"in-process":    func() (*nats.Conn, error) { return Connect(ctx, config.NATS{}, e, logger) },
		"nats.url file": func() (*nats.Conn, error) { return Connect(ctx, config.NATS{URL: fileURL}, nil, logger) },
	} {
		nc, err := conn()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := nc.FlushWithContext(ctx); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		nc.Close()
	}
}

func TestEmbeddedTokenSources(t *testing.T) {
	env := map[string]string{"NT": " from-env \n"}
	getenv := func(k string) string { return env[k] }
	if tok, err := EmbeddedToken(config.NATS{TokenEnv: "NT"}, getenv, true, nil); err != nil || tok != "from-env" {
		t.Fatalf("token_env: %q, %v", tok, err)
	}
	if _, err := EmbeddedToken(config.NATS{TokenEnv: "EMPTY"}, getenv, true, nil); err == nil || !strings.Contains(err.Error(), "$EMPTY is empty") {
		t.Fatalf("empty token_env: %v", err)
	}
	if tok, err := EmbeddedToken(config.NATS{}, getenv, true, nil); err != nil || tok != "" {
		t.Fatalf("no source: %q, %v", tok, err)
	}
	path := filepath.Join(t.TempDir(), "sub", "nats.token")
	if _, err := EmbeddedToken(config.NATS{TokenFile: path}, getenv, false, nil); err == nil {
		t.Fatal("missing token_file without create: no error")
	}
	tok, err := EmbeddedToken(config.NATS{TokenFile: path}, getenv, true, nil)
	if err != nil || len(tok) != 64 {
		t.Fatalf("created token %q, %v", tok, err)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v %v", err, st.Mode().Perm())
	}
	again, err := EmbeddedToken(config.NATS{TokenFile: path}, getenv, true, nil)
	if err != nil || again != tok {
		t.Fatalf("second read %q, %v; want the stored %q", again, err, tok)
	}
}
