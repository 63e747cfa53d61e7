package publisher

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// URLFile is the file, relative to the data directory, where a listening
// embedded server writes its client URL, and where the CLI looks for it.
const URLFile = "nats.url"

// embeddedReadyTimeout bounds how long StartEmbedded waits for the server.
const embeddedReadyTimeout = 10 * time.Second

// ErrEmbeddedNotReady is returned by StartEmbedded when the server did not
// become ready for connections in time (usually a locked or corrupt store).
var ErrEmbeddedNotReady = errors.New("embedded nats server not ready")

// EmbeddedOption configures StartEmbedded.
type EmbeddedOption func(*embeddedOptions)

type embeddedOptions struct {
	listen string
	token  string
}

// ErrListenInUse is returned by StartEmbedded when its listen address is
// taken by another process.
var ErrListenInUse = errors.New("address already in use")

// WithToken makes the embedded server require token of every client,
// in-process ones included (Connect with the *Embedded presents it), and
// puts it in the URL written to dataDir/nats.url, so that CLI verbs reading
// that file (mode 0600) can connect. "" leaves the server open.
func WithToken(token string) EmbeddedOption {
	return func(o *embeddedOptions) { o.token = token }
}

// WithListen makes the embedded server accept TCP clients on addr
// ("127.0.0.1:4223"; port 0 picks a free port) and write its URL to
// dataDir/nats.url. Without it the server does not listen at all and only
// in-process connections (Connect with the *Embedded) reach it.
func WithListen(addr string) EmbeddedOption {
	return func(o *embeddedOptions) { o.listen = addr }
}

// Embedded is an in-process nats-server with JetStream, storing in
// dataDir/nats.
type Embedded struct {
	srv     *server.Server
	logger  *slog.Logger
	urlFile string
	token   string

	mu       sync.Mutex
	clients  []interface{ Close() }
	after    []func()
	shutdown sync.Once
}

// OnShutdown registers f to run at the end of Shutdown, after the server
// stopped (e.g. to release a lock on the data directory).
func (e *Embedded) OnShutdown(f func()) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.after = append(e.after, f)
}

// StartEmbedded starts the server and waits until it accepts connections.
// The caller must Shutdown it.
func StartEmbedded(dataDir string, logger *slog.Logger, opts ...EmbeddedOption) (*Embedded, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	var o embeddedOptions
	for _, f := range opts {
		f(&o)
	}
	storeDir := filepath.Join(dataDir, "nats")
	if err := os.MkdirAll(storeDir, 0o700); err != nil {
		return nil, fmt.Errorf("embedded nats: create store %s: %w", storeDir, err)
	}
	sopts := &server.Options{
		ServerName: "mailworker-embedded",
		JetStream:  true,
		StoreDir:   storeDir,
		NoSigs:     true,
		NoLog:      true,
		DontListen: o.listen == "",
	}
	if o.listen != "" {
		host, port, err := net.SplitHostPort(o.listen)
		if err != nil {
			return nil, fmt.Errorf("embedded nats: listen address %q: %w", o.listen, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return nil, fmt.Errorf("embedded nats: listen port %q: %w", port, err)
		}
		if p == 0 {
			p = server.RANDOM_PORT
		} else if err := probeListen(o.listen); err != nil {
			// nats-server would only log this and never become ready.
			return nil, err
		}
		sopts.Host, sopts.Port = host, p
		if o.token != "" {
			sopts.Authorization = o.token
		}
	}
	ns, err := server.NewServer(sopts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	ns.Start()
	if !ns.ReadyForConnections(embeddedReadyTimeout) {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, fmt.Errorf("embedded nats (store %s): %w", storeDir, ErrEmbeddedNotReady)
	}
	e := &Embedded{srv: ns, logger: logger}
	if o.listen != "" {
		e.token = o.token
		e.urlFile = filepath.Join(dataDir, URLFile)
		u := ns.ClientURL()
		if e.token != "" {
			u = strings.Replace(u, "://", "://"+url.User(e.token).String()+"@", 1)
		}
		if err := writeFileAtomic(e.urlFile, []byte(u+"\n"), 0o600); err != nil {
			e.Shutdown()
			return nil, fmt.Errorf("embedded nats: write %s: %w", e.urlFile, err)
		}
	}
	logger.Info("embedded nats started", "store", storeDir, "url", e.URL(), "token_required", e.token != "")
	return e, nil
}

// probeListen reports whether addr can be listened on, with an error that
// says what to do when it is taken.
func probeListen(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("embedded nats: cannot listen on %s: %w (another NATS server, or another mailworker?); "+
				"set nats.listen (or MAILWORKER_NATS_LISTEN) to a free address, e.g. 127.0.0.1:4223, or 127.0.0.1:0 for a random free port",
				addr, ErrListenInUse)
		}
		return fmt.Errorf("embedded nats: cannot listen on %s: %w; set nats.listen (or MAILWORKER_NATS_LISTEN) to another address", addr, err)
	}
	return ln.Close()
}

// URL is the server's client URL, "" when it does not listen. It never
// holds the token (see Token).
func (e *Embedded) URL() string {
	if e.urlFile == "" {
		return ""
	}
	return e.srv.ClientURL()
}

// Token is the token the server requires of clients, "" when none.
func (e *Embedded) Token() string { return e.token }

// Server returns the nats-server, for in-process connections.
func (e *Embedded) Server() *server.Server { return e.srv }

// track registers a client connection that Shutdown closes first: closing
// the server under an open in-process connection causes "read/write on
// closed pipe" errors.
func (e *Embedded) track(c interface{ Close() }) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.clients = append(e.clients, c)
}

// Shutdown closes the connections made through Connect, stops the server,
// waits for it, and removes the URL file. It is safe to call more than
// once and from several goroutines; every call returns after the server
// has stopped.
func (e *Embedded) Shutdown() {
	e.shutdown.Do(func() {
		e.mu.Lock()
		clients, after := e.clients, e.after
		e.clients, e.after = nil, nil
		e.mu.Unlock()
		defer func() {
			for _, f := range after {
				f()
			}
		}()
		for _, c := range clients {
			c.Close()
		}
		e.srv.Shutdown()
		e.srv.WaitForShutdown()
		if e.urlFile != "" {
			if err := os.Remove(e.urlFile); err != nil && !errors.Is(err, os.ErrNotExist) {
				e.logger.Warn("embedded nats: remove url file", "path", e.urlFile, "err", err)
			}
		}
	})
}

// ReadURLFile returns the URL a running worker's embedded server wrote to
// dataDir/nats.url, or an error wrapping os.ErrNotExist when there is none.
func ReadURLFile(dataDir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, URLFile))
	if err != nil {
		return "", fmt.Errorf("read embedded nats url: %w", err)
	}
	u := string(b)
	for len(u) > 0 && (u[len(u)-1] == '\n' || u[len(u)-1] == '\r' || u[len(u)-1] == ' ') {
		u = u[:len(u)-1]
	}
	if u == "" {
		return "", fmt.Errorf("read embedded nats url: %s is empty", filepath.Join(dataDir, URLFile))
	}
	return u, nil
}

// writeFileAtomic writes b to path through a temporary file in the same
// directory and a rename, so readers never see a partial file.
func writeFileAtomic(path string, b []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}
