package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runCheckConfig(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	e := &cliEnv{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, getenv: func(k string) string { return env[k] }}
	code = runCLI(e, append([]string{"check-config"}, args...))
	return code, out.String(), errb.String()
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const checkConfigOK = `servers:
  - name: support
    protocol: imaps
    host: imap.example.com
    username: support@example.com
    auth: {method: password, password_env: SUPPORT_PW}
    fetch_interval: 2
    after_fetch: move:Done
    plus_address_ticket_ref: true
    trusted_authserv_ids: [mx.example.com]
  - name: graph
    protocol: graph
    mailbox: box@contoso.com
    disable_new_requests: true
    new_request_allow: ["*@contoso.com"]
    auth:
      method: oauth2
      oauth: {provider: microsoft, tenant: contoso.com, flow: client_credentials, client_id: id, client_secret_env: GRAPH_CS}
`

func TestCheckConfigOK(t *testing.T) {
	path := writeFile(t, "mw.yaml", checkConfigOK)
	code, out, errOut := runCheckConfig(t, map[string]string{"SUPPORT_PW": "x"}, "--config", path)
	if code != 0 {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	for _, want := range []string{
		path + ": OK, 2 servers\n",
		"NAME", "AUTH",
		"support  imaps     imap.example.com:993",
		"2m0s", "move:Done", "password", "plus-ticket-ref,trusted-authserv(1)",
		"graph:box@contoso.com", "inbox", "5m0s", "mark_seen", "oauth2 microsoft/client_credentials", "no-new-requests(allow 1)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}
	if errOut != "warning: servers.graph.auth.oauth.client_secret_env: environment variable GRAPH_CS is not set\n" {
		t.Errorf("stderr = %q", errOut)
	}
}

func TestCheckConfigErrors(t *testing.T) {
	path := writeFile(t, "mw.yaml", `servers:
  - name: support
    protocol: imaps
    username: u
    auth: {method: password, password: hunter2}
    fetch_interval: 3s
`)
	code, out, errOut := runCheckConfig(t, nil, "--config", path)
	if code != 1 {
		t.Fatalf("exit %d, want 1\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	want := path + ":2: servers.support.host: required for protocol imaps\n" +
		path + ":5: servers.support.auth.password: secrets are not allowed inline; use password_env or password_file\n" +
		path + ":6: servers.support.fetch_interval: must be at least 10s, got 3s (a bare number means minutes)\n" +
		path + ": 3 errors\n"
	if errOut != want {
		t.Errorf("stderr =\n%s\nwant\n%s", errOut, want)
	}
	if out != "" {
		t.Errorf("stdout = %q, want nothing", out)
	}
	if strings.Contains(errOut, "hunter2") {
		t.Error("the inline secret is printed")
	}
}

func TestCheckConfigPath(t *testing.T) {
	byEnv := writeFile(t, "env.yaml", "servers: []\n")
	code, out, errOut := runCheckConfig(t, map[string]string{"MAILWORKER_CONFIG": byEnv})
	if code != 0 || out != byEnv+": OK, 0 servers\n" {
		t.Errorf("$MAILWORKER_CONFIG: exit %d stdout %q stderr %q", code, out, errOut)
	}

	// The flag wins over the environment; environment overrides apply.
	byFlag := writeFile(t, "flag.yaml", checkConfigOK)
	code, out, errOut = runCheckConfig(t, map[string]string{"MAILWORKER_CONFIG": byEnv, "MAILWORKER_SERVERS_SUPPORT_HOST": "other.example.com"}, "--config", byFlag)
	if code != 0 || !strings.HasPrefix(out, byFlag+": OK, 2 servers") || !strings.Contains(out, "other.example.com:993") {
		t.Errorf("--config with override: exit %d stdout %q stderr %q", code, out, errOut)
	}

	// Neither: ./mailworker.yaml.
	dir := t.TempDir()
	t.Chdir(dir)
	code, _, errOut = runCheckConfig(t, nil)
	if code != 1 || !strings.Contains(errOut, "config: read mailworker.yaml:") || !strings.Contains(errOut, "no such file") {
		t.Errorf("no config: exit %d stderr %q", code, errOut)
	}
	if err := os.WriteFile(filepath.Join(dir, "mailworker.yaml"), []byte("log: {level: debug}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out, errOut = runCheckConfig(t, nil); code != 0 || out != "mailworker.yaml: OK, 0 servers\n" {
		t.Errorf("./mailworker.yaml: exit %d stdout %q stderr %q", code, out, errOut)
	}

	if code, _, _ = runCheckConfig(t, nil, "extra"); code != 2 {
		t.Errorf("extra argument: exit %d, want 2", code)
	}
}

func TestResolveConfigPath(t *testing.T) {
	env := &cliEnv{getenv: func(k string) string { return map[string]string{"MAILWORKER_CONFIG": "/etc/mw.yaml"}[k] }}
	if got := resolveConfigPath(env, "x.yaml"); got != "x.yaml" {
		t.Errorf("flag: %q", got)
	}
	if got := resolveConfigPath(env, ""); got != "/etc/mw.yaml" {
		t.Errorf("env: %q", got)
	}
	env.getenv = func(string) string { return "" }
	if got := resolveConfigPath(env, ""); got != "mailworker.yaml" {
		t.Errorf("default: %q", got)
	}
}
