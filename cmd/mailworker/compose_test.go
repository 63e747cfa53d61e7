package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/mailworker/mailworker/config"
	"github.com/mailworker/mailworker/fetcher"
	"github.com/mailworker/mailworker/replay"
	"github.com/mailworker/mailworker/secret"
	"github.com/mailworker/mailworker/storage/storagetest"
)

// The docker-compose stack cannot be started here (no Docker engine), so
// these tests run what its services run, without Docker: every command of
// a service built from the repository's Dockerfile goes through runCLI,
// with the container paths mapped to the repository and the Dovecot image's
// own configuration and entrypoint run with the system's Dovecot.

const (
	composeFile   = "../../docker-compose.yml"
	composeConfig = "../../docker/mailworker.compose.yaml"
	dovecotDir    = "../../docker/dovecot"
	samplesDir    = "../../samples/mail"
)

type composeService struct {
	Build       any               `yaml:"build"`
	Image       string            `yaml:"image"`
	Entrypoint  []string          `yaml:"entrypoint"`
	Command     []string          `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
	Volumes     []string          `yaml:"volumes"`
	Profiles    []string          `yaml:"profiles"`
	DependsOn   map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
	Healthcheck *struct {
		Test []string `yaml:"test"`
	} `yaml:"healthcheck"`
}

func readCompose(t *testing.T) map[string]composeService {
	t.Helper()
	b, err := os.ReadFile(composeFile)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Services map[string]composeService `yaml:"services"`
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatalf("parse %s: %v", composeFile, err)
	}
	return f.Services
}

// mailworkerArgs returns the CLI arguments a service built from the
// repository's Dockerfile runs (ENTRYPOINT mailworker, CMD run), or
// ok=false for other services.
func mailworkerArgs(s composeService) (args []string, ok bool) {
	if s.Build != "." {
		return nil, false
	}
	ep := s.Entrypoint
	if len(ep) == 0 {
		ep = []string{"/usr/local/bin/mailworker"}
	}
	if ep[0] != "/usr/local/bin/mailworker" {
		return nil, false
	}
	cmd := s.Command
	if cmd == nil {
		cmd = []string{"run"}
	}
	return append(append([]string{}, ep[1:]...), cmd...), true
}

var composeDefault = regexp.MustCompile(`\$\{([A-Z_]+):-([^}]*)\}`)

// serviceEnv returns a getenv over the service's environment, with
// ${VAR:-default} replaced by its default, plus extra.
func serviceEnv(s composeService, extra map[string]string) func(string) string {
	env := map[string]string{}
	for k, v := range s.Environment {
		env[k] = composeDefault.ReplaceAllString(v, "$2")
	}
	for k, v := range extra {
		env[k] = v
	}
	return func(k string) string { return env[k] }
}

func TestComposeFile(t *testing.T) {
	services := readCompose(t)
	for _, name := range []string{"nats", "postgres", "dovecot", "mailworker", "events", "replay", "check-config"} {
		if _, ok := services[name]; !ok {
			t.Errorf("service %s missing", name)
		}
	}
	pinned := regexp.MustCompile(`^[a-z0-9./-]+:[0-9]+\.[0-9]+(\.[0-9]+)?(-[a-z0-9]+)?$`)
	for name, s := range services {
		if s.Image != "" && !pinned.MatchString(s.Image) {
			t.Errorf("service %s: image %q is not pinned to a release tag", name, s.Image)
		}
		if args, ok := mailworkerArgs(s); ok {
			if len(args) == 0 || commands[args[0]] == nil {
				t.Errorf("service %s runs %v: not a mailworker verb", name, args)
			}
		}
		oneShot := name == "replay" || name == "check-config"
		if s.Healthcheck == nil && !oneShot && name != "mailworker" && name != "events" {
			t.Errorf("service %s has no healthcheck", name)
		}
		for dep, c := range s.DependsOn {
			d, ok := services[dep]
			if !ok {
				t.Errorf("service %s depends on unknown %s", name, dep)
				continue
			}
			switch c.Condition {
			case "service_healthy":
				if d.Healthcheck == nil && !strings.Contains(dep, "dovecot") {
					t.Errorf("service %s waits for %s to be healthy, which has no healthcheck", name, dep)
				}
			case "service_completed_successfully", "service_started":
			default:
				t.Errorf("service %s: depends_on %s: condition %q", name, dep, c.Condition)
			}
		}
	}
	// Images: pinned bases, a non-root user, nothing secret copied in.
	for _, df := range []string{"../../Dockerfile", dovecotDir + "/Dockerfile"} {
		b, err := os.ReadFile(df)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "FROM" {
				if !strings.Contains(f[1], ":") || strings.HasSuffix(f[1], ":latest") {
					t.Errorf("%s: unpinned base image %s", df, f[1])
				}
			}
			if strings.Contains(strings.ToUpper(line), "PASSWORD=") {
				t.Errorf("%s: a password is set in the image: %q", df, line)
			}
		}
	}
	if b, _ := os.ReadFile("../../Dockerfile"); !bytes.Contains(b, []byte("\nUSER 65532")) {
		t.Errorf("Dockerfile: runtime stage does not switch to a non-root USER")
	}
	ignore, err := os.ReadFile("../../.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{".git", "data", "*.key", ".env"} {
		if !slices.Contains(strings.Fields(string(ignore)), want) {
			t.Errorf(".dockerignore does not exclude %s", want)
		}
	}
}

// TestComposeCheckConfig runs the check-config service's command with the
// service's environment: the compose configuration must be valid.
func TestComposeCheckConfig(t *testing.T) {
	s := readCompose(t)["check-config"]
	args, _ := mailworkerArgs(s)
	args = mapContainerPaths(args)
	ca := filepath.Join(t.TempDir(), "cert.pem")
	if err := os.WriteFile(ca, []byte("placeholder\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	env := &cliEnv{stdin: strings.NewReader(""), stdout: &out, stderr: &errb,
		getenv: serviceEnv(s, map[string]string{"MAILWORKER_SERVERS_HELPDESK_TLS_CA_FILE": ca})}
	if code := runCLI(env, args); code != 0 {
		t.Fatalf("mailworker %s = exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out.String(), errb.String())
	}
	// The same file, loaded as run loads it, names the compose hosts.
	cfg, err := config.LoadWith(composeConfig, config.LoadOptions{Getenv: env.getenv})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Database.Driver != "postgres" || !strings.Contains(cfg.Database.DSN, "@postgres:5432/") || cfg.NATS.URL != "nats://nats:4222" {
		t.Errorf("compose config: database %q %q, nats %q", cfg.Database.Driver, cfg.Database.DSN, cfg.NATS.URL)
	}
}

// TestComposeVerbsAcceptFlags checks that the long-running services'
// commands use only flags their verbs define: parsing stops at the --help
// put after them, and an unknown flag is reported before that.
func TestComposeVerbsAcceptFlags(t *testing.T) {
	for name, s := range readCompose(t) {
		args, ok := mailworkerArgs(s)
		if !ok {
			continue
		}
		t.Run(name, func(t *testing.T) {
			if commands[args[0]] == nil {
				t.Fatalf("service %s runs verb %q, which is not registered", name, args[0])
			}
			// Insert --help before the first positional argument.
			i := 1
			for i < len(args) && strings.HasPrefix(args[i], "-") {
				if !strings.Contains(args[i], "=") && i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") && !composeBoolFlag(args[i]) {
					i++
				}
				i++
			}
			probe := append(append(append([]string{}, args[:i]...), "--help"), args[i:]...)
			var out, errb bytes.Buffer
			env := &cliEnv{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, getenv: serviceEnv(s, nil)}
			code := runCLI(env, probe)
			if e := errb.String(); strings.Contains(e, "flag provided but not defined") || strings.Contains(e, "invalid value") {
				t.Errorf("mailworker %s: exit %d: %s", strings.Join(probe, " "), code, errb.String())
			}
		})
	}
}

func composeBoolFlag(f string) bool {
	switch strings.TrimLeft(f, "-") {
	case "follow", "dry-run", "insecure-skip-verify":
		return true
	}
	return false
}

// mapContainerPaths maps the container paths used in docker-compose.yml to
// the repository.
func mapContainerPaths(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		switch a {
		case "/etc/mailworker/mailworker.yaml":
			a = composeConfig
		case "/samples":
			a = samplesDir
		}
		out[i] = a
	}
	return out
}

// composeFreeAddr returns a loopback port free at the time of the call.
func composeFreeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// dockerDovecot runs the dovecot image's entrypoint.sh and dovecot.conf
// with the system's Dovecot, paths moved into a temporary directory and
// the listeners on free loopback ports. It returns the imaps address and
// the directory holding certs/cert.pem.
func dockerDovecot(t *testing.T, user, password string) (imapsAddr, dir string) {
	t.Helper()
	required := os.Getenv("MAILWORKER_TEST_REQUIRE_DOVECOT") == "1"
	for _, bin := range []string{"/usr/sbin/dovecot", "/usr/bin/doveadm", "openssl"} {
		if _, err := exec.LookPath(bin); err != nil {
			if required {
				t.Fatalf("dovecot required but %s is missing", bin)
			}
			t.Skipf("%s not installed; skipping the Dovecot image test", bin)
		}
	}
	if os.Geteuid() != 0 {
		if required {
			t.Fatal("the Dovecot image test runs Dovecot as in the image and needs root")
		}
		t.Skip("the Dovecot image test runs Dovecot as in the image and needs root")
	}
	// Short: Dovecot's unix sockets live under base_dir.
	dir, err := os.MkdirTemp("", "mwdk")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	for _, d := range []string{"run", "certs", "mail"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("chown", "dovecot:dovecot", filepath.Join(dir, "mail")).CombinedOutput(); err != nil {
		t.Fatalf("chown: %v: %s", err, out)
	}
	imapsAddr, imapAddr := composeFreeAddr(t), composeFreeAddr(t)
	_, imapsPort, _ := net.SplitHostPort(imapsAddr)
	_, imapPort, _ := net.SplitHostPort(imapAddr)
	subst := strings.NewReplacer(
		"/run/dovecot", filepath.Join(dir, "run"),
		"/certs", filepath.Join(dir, "certs"),
		"/srv/mail", filepath.Join(dir, "mail"),
		"port = 143", "port = "+imapPort,
		"port = 993", "port = "+imapsPort,
		"listen = *", "listen = 127.0.0.1",
		"log_path = /dev/stderr", "log_path = "+filepath.Join(dir, "dovecot.log"),
		"info_log_path = /dev/stdout", "info_log_path = "+filepath.Join(dir, "dovecot.log"),
	)
	for _, f := range []string{"dovecot.conf", "entrypoint.sh"} {
		b, err := os.ReadFile(filepath.Join(dovecotDir, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), []byte(subst.Replace(string(b))), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	conf := filepath.Join(dir, "dovecot.conf")
	cmd := exec.Command("sh", filepath.Join(dir, "entrypoint.sh"), "/usr/sbin/dovecot", "-F", "-c", conf)
	cmd.Env = append(os.Environ(), "DOVECOT_USER="+user, "DOVECOT_PASSWORD="+password)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(dir, "dovecot.log"))
			t.Logf("entrypoint output:\n%s\ndovecot.log:\n%s", out.String(), log)
		}
	})
	// The image's healthcheck, over the same listener.
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case err := <-exited:
			log, _ := os.ReadFile(filepath.Join(dir, "dovecot.log"))
			t.Fatalf("dovecot image entrypoint exited: %v\n%s\n%s", err, out.String(), log)
		default:
		}
		hc := exec.Command("sh", "-c", strings.ReplaceAll(composeRead(t, filepath.Join(dovecotDir, "healthcheck.sh")), "127.0.0.1:993", imapsAddr))
		if hc.Run() == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dovecot image not healthy on %s within 20s: %s", imapsAddr, out.String())
		}
		time.Sleep(50 * time.Millisecond) // polling a port: nothing to wait on
	}
	return imapsAddr, dir
}

func composeRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestComposeReplayIntoDovecotImage runs the replay service's exact command
// (entrypoint + `/samples`, as `docker-compose run --rm replay /samples`)
// against the Dovecot image's configuration, then fetches the mailbox with
// the server section of the compose mailworker configuration: each sample
// must arrive once, byte for byte.
func TestComposeReplayIntoDovecotImage(t *testing.T) {
	services := readCompose(t)
	rs := services["replay"]
	getenv := serviceEnv(rs, nil)
	password := getenv("DOVECOT_PASSWORD")
	user := serviceEnv(services["dovecot"], nil)("DOVECOT_USER")
	addr, dir := dockerDovecot(t, user, password)

	args, _ := mailworkerArgs(rs) // its command is /samples, as in `run --rm replay /samples`
	for i, a := range args {
		switch {
		case strings.Contains(a, "@dovecot:993/"):
			args[i] = strings.Replace(a, "dovecot:993", addr, 1)
		case a == "/certs/cert.pem":
			args[i] = filepath.Join(dir, "certs", "cert.pem")
		}
	}
	args = mapContainerPaths(args)
	var out, errb bytes.Buffer
	env := &cliEnv{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, getenv: getenv}
	if code := runCLI(env, args); code != 0 {
		t.Fatalf("mailworker %s = exit %d: %s", strings.Join(args, " "), code, errb.String())
	}
	if !strings.Contains(errb.String(), "replayed 10 messages") {
		t.Errorf("replay output: %q, want it to report 10 messages", errb.String())
	}

	// Fetch with the compose configuration's server, pointed at this Dovecot.
	host, port, _ := net.SplitHostPort(addr)
	cfg, err := config.LoadWith(composeConfig, config.LoadOptions{Getenv: serviceEnv(services["mailworker"], map[string]string{
		"MAILWORKER_SERVERS_HELPDESK_HOST":        host,
		"MAILWORKER_SERVERS_HELPDESK_PORT":        port,
		"MAILWORKER_SERVERS_HELPDESK_TLS_CA_FILE": filepath.Join(dir, "certs", "cert.pem"),
	})})
	if err != nil {
		t.Fatal(err)
	}
	srv, ok := findServer(cfg, "helpdesk")
	if !ok {
		t.Fatal("compose config has no server helpdesk")
	}
	srv.TLS.ServerName = "" // the certificate also names 127.0.0.1
	f, err := fetcher.NewIMAP(srv, fetcher.Deps{Checkpoints: fetcher.NewCheckpoints(storagetest.Open(t, "sqlite")),
		Credentials: replay.PasswordCredentials{Secret: secret.New(password)}})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sink := &composeSink{}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := f.Fetch(ctx, sink); err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	if len(sink.shas) != 10 {
		t.Fatalf("fetched %d messages, want the 10 samples", len(sink.shas))
	}
	seen := map[string]bool{}
	for _, s := range sink.shas {
		if seen[s] {
			t.Errorf("message %s fetched twice", s)
		}
		seen[s] = true
	}
}

// composeSink records the SHA-256 of each delivered message.
type composeSink struct {
	mu   sync.Mutex
	shas []string
}

type composeAck struct{}

func (composeAck) Wait(context.Context) error { return nil }

func (s *composeSink) Deliver(_ context.Context, m *fetcher.Message) (fetcher.Ack, error) {
	h := sha256.New()
	if _, err := io.Copy(h, m.Body.Open()); err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.shas = append(s.shas, hex.EncodeToString(h.Sum(nil)))
	s.mu.Unlock()
	return composeAck{}, nil
}
