package worker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mailworker/mailworker/imaptest"
	"github.com/mailworker/mailworker/publisher"
)

// embeddedRunConfig writes a config for `mailworker run` with the embedded
// NATS server listening on listen (plus extra nats keys), one IMAP server,
// and returns its path and data_dir.
func embeddedRunConfig(t *testing.T, listen, extraNATS string) (cfgFile, dataDir string) {
	t.Helper()
	m := imaptest.StartMem(t, imaptest.MemOptions{Users: map[string]string{testUser: testPassword}})
	m.Append(t, testUser, "INBOX", mail("a@example.org", "Hello", ""))
	dir := t.TempDir()
	dataDir = filepath.Join(dir, "data")
	cfgFile = filepath.Join(dir, "mailworker.yaml")
	yaml := fmt.Sprintf(`data_dir: %s
nats:
  listen: %q
%sadmin: {listen: "off"}
log: {format: json}
servers:
  - name: support
    protocol: imaps
    host: 127.0.0.1
    port: %d
    tls: {ca_file: %s}
    username: %s
    auth: {method: password, password_env: %s}
    fetch_interval: 10m
`, dataDir, listen, extraNATS, m.Port(), m.CAFile(), testUser, passwordEnv)
	if err := os.WriteFile(cfgFile, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfgFile, dataDir
}

type runProc struct {
	cmd  *exec.Cmd
	out  *logBuffer
	done chan error
}

func startRun(t *testing.T, bin, cfgFile string, env ...string) *runProc {
	t.Helper()
	p := &runProc{cmd: exec.Command(bin, "run", "--config", cfgFile), out: &logBuffer{}, done: make(chan error, 1)}
	p.cmd.Env = append(append(os.Environ(), passwordEnv+"="+testPassword), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// exit waits for the process to end by itself and returns its exit code.
func (p *runProc) exit(t *testing.T) int {
	t.Helper()
	select {
	case err := <-p.done:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	case <-time.After(60 * time.Second):
		t.Fatalf("run did not exit\n%s", p.out.String())
		return -1
	}
}

func (p *runProc) running() bool {
	select {
	case err := <-p.done:
		p.done <- err
		return false
	default:
		return true
	}
}

// waitRunning waits until the worker logged that it runs and returns the
// URL its embedded server wrote to data_dir/nats.url.
func (p *runProc) waitRunning(t *testing.T, dataDir string) string {
	t.Helper()
	waitFor(t, 60*time.Second, "mailworker running", func() bool {
		if !p.running() {
			t.Fatalf("run exited early\n%s", p.out.String())
		}
		return strings.Contains(p.out.String(), `"msg":"mailworker running"`)
	})
	u, err := publisher.ReadURLFile(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestRunEmbeddedNATSListenTaken(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildBinary(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	taken := ln.Addr().String()
	cfgFile, dataDir := embeddedRunConfig(t, taken, "")
	p := startRun(t, bin, cfgFile)
	if code := p.exit(t); code == 0 {
		t.Fatalf("run with %s taken exited 0\n%s", taken, p.out.String())
	}
	out := p.out.String()
	for _, want := range []string{"cannot listen on " + taken, "address already in use", "nats.listen", "MAILWORKER_NATS_LISTEN", "127.0.0.1:0"} {
		if !strings.Contains(out, want) {
			t.Errorf("error output lacks %q:\n%s", want, out)
		}
	}

	// MAILWORKER_NATS_LISTEN overrides the file: a random free port.
	p = startRun(t, bin, cfgFile, "MAILWORKER_NATS_LISTEN=127.0.0.1:0")
	u := p.waitRunning(t, dataDir)
	if strings.Contains(u, taken) || !strings.HasPrefix(u, "nats://127.0.0.1:") {
		t.Fatalf("nats.url %q; want a free loopback port other than %s", u, taken)
	}
	stopRun(t, p)
}

func stopRun(t *testing.T, p *runProc) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.exit(t); code != 0 {
		t.Fatalf("run exited %d after SIGTERM\n%s", code, p.out.String())
	}
}

func TestRunEmbeddedNATSToken(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildBinary(t)

	// Non-loopback without a token: refused by check-config and run.
	cfgFile, _ := embeddedRunConfig(t, "0.0.0.0:0", "")
	for _, verb := range []string{"check-config", "run"} {
		cmd := exec.Command(bin, verb, "--config", cfgFile)
		cmd.Env = append(os.Environ(), passwordEnv+"="+testPassword)
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Fatalf("%s accepted nats.listen 0.0.0.0:0 without a token\n%s", verb, out)
		}
		for _, want := range []string{"nats.listen", "0.0.0.0:0 is not a loopback address", "nats.token_env", "nats.token_file"} {
			if !strings.Contains(string(out), want) {
				t.Errorf("%s output lacks %q:\n%s", verb, want, out)
			}
		}
	}

	// With a token file that does not exist yet: run creates it (0600)
	// and requires the token of every client.
	tokenFile := filepath.Join(t.TempDir(), "secrets", "nats.token")
	cfgFile, dataDir := embeddedRunConfig(t, "0.0.0.0:0", fmt.Sprintf("  token_file: %s\n", tokenFile))
	if out, err := exec.Command(bin, "check-config", "--config", cfgFile).CombinedOutput(); err != nil {
		t.Fatalf("check-config with a token_file to create: %v\n%s", err, out)
	}
	p := startRun(t, bin, cfgFile)
	u := p.waitRunning(t, dataDir)
	st, err := os.Stat(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("token file mode %v, want 0600", st.Mode().Perm())
	}
	b, _ := os.ReadFile(tokenFile)
	token := strings.TrimSpace(string(b))
	if len(token) < 32 {
		t.Fatalf("generated token %q is short", token)
	}
	if st, err := os.Stat(filepath.Join(dataDir, publisher.URLFile)); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("nats.url: %v, mode %v; want 0600", err, st.Mode().Perm())
	}
	pu, err := url.Parse(u)
	if err != nil || pu.User == nil || pu.User.Username() != token {
		t.Fatalf("nats.url %q does not carry the token", u)
	}
	if strings.Contains(p.out.String(), token) {
		t.Fatal("the token appears in the logs")
	}
	bare := "nats://" + pu.Host
	if nc, err := nats.Connect(bare, nats.Timeout(10*time.Second), nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Fatal("a client without the token was accepted")
	} else if !errors.Is(err, nats.ErrAuthorization) && !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Fatalf("without the token: %v, want an authorization error", err)
	}
	if nc, err := nats.Connect(bare, nats.Token("wrong-"+token), nats.Timeout(10*time.Second), nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Fatal("a client with a wrong token was accepted")
	}
	nc, err := nats.Connect(bare, nats.Token(token), nats.Timeout(10*time.Second))
	if err != nil {
		t.Fatalf("with the token: %v", err)
	}
	if err := nc.FlushTimeout(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	nc.Close()
	// A CLI verb finds the server and its token in data_dir.
	waitFor(t, 60*time.Second, "the first fetch", func() bool { return strings.Contains(p.out.String(), `"msg":"fetched"`) })
	ev := exec.Command(bin, "events", "--config", cfgFile)
	ev.Env = append(os.Environ(), passwordEnv+"="+testPassword)
	out, err := ev.CombinedOutput()
	if err != nil {
		t.Fatalf("events against the token-protected worker: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), `"subject":"Hello"`) {
		t.Errorf("events printed no event for the fetched mail:\n%s", out)
	}
	stopRun(t, p)
}

// TestRunDataDirLock: a second `run` on the same data_dir is refused while
// the first keeps running; after kill -9 of the first a new one starts.
func TestRunDataDirLock(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildBinary(t)
	cfgFile, dataDir := embeddedRunConfig(t, "127.0.0.1:0", "")
	first := startRun(t, bin, cfgFile)
	u := first.waitRunning(t, dataDir)

	second := startRun(t, bin, cfgFile)
	if code := second.exit(t); code == 0 {
		t.Fatalf("second run on the same data_dir exited 0\n%s", second.out.String())
	}
	out := second.out.String()
	for _, want := range []string{"data_dir is in use by another mailworker", fmt.Sprintf("pid %d", first.cmd.Process.Pid), filepath.Join(dataDir, "lock")} {
		if !strings.Contains(out, want) {
			t.Errorf("second run's error lacks %q:\n%s", want, out)
		}
	}
	if !first.running() {
		t.Fatalf("the first run stopped\n%s", first.out.String())
	}
	if u2, err := publisher.ReadURLFile(dataDir); err != nil || u2 != u {
		t.Fatalf("nats.url changed under the first run: %q, %v", u2, err)
	}
	nc, err := nats.Connect(u, nats.Timeout(10*time.Second))
	if err != nil {
		t.Fatalf("the first run's NATS is gone: %v", err)
	}
	nc.Close()

	// kill -9: the kernel drops the lock; nats.url is left behind.
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	first.exit(t)
	if _, err := publisher.ReadURLFile(dataDir); err != nil {
		t.Fatalf("nats.url after kill -9: %v", err)
	}
	// CLI verbs see that nobody holds data_dir and ignore the stale URL
	// (they open the store themselves).
	ev := exec.Command(bin, "events", "--config", cfgFile)
	ev.Env = append(os.Environ(), passwordEnv+"="+testPassword)
	if out, err := ev.CombinedOutput(); err != nil {
		t.Fatalf("events after kill -9: %v\n%s", err, out)
	}
	third := startRun(t, bin, cfgFile)
	u3 := third.waitRunning(t, dataDir)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc, err = nats.Connect(u3, nats.Timeout(10*time.Second))
	if err != nil {
		t.Fatalf("NATS of the run after kill -9: %v", err)
	}
	if err := nc.FlushWithContext(ctx); err != nil {
		t.Fatal(err)
	}
	nc.Close()
	stopRun(t, third)
}
