package main

import (
	"strings"
	"testing"

	"github.com/mailworker/mailworker/config"
	"github.com/mailworker/mailworker/worker"
)

// TestAdminURL: admin-url finds the token `run` generated in data_dir
// (no admin section needed) and prints a login link on the configured
// listener without the token in it; before the first start it says so.
func TestAdminURL(t *testing.T) {
	dataDir := t.TempDir()
	path := writeFile(t, "mw.yaml", "data_dir: "+dataDir+"\nservers: []\n")
	code, out, errOut := cli(t, nil, "admin-url", "--config", path)
	if code != 1 || !strings.Contains(errOut, "does not exist yet") {
		t.Fatalf("admin-url before the first run: exit %d\n%s%s", code, out, errOut)
	}
	tok, generated, err := worker.AdminToken(&config.Config{DataDir: dataDir}, nil, true)
	if err != nil || !generated {
		t.Fatal(generated, err)
	}
	code, out, errOut = cli(t, nil, "admin-url", "--config", path)
	if code != 0 || !strings.HasPrefix(out, "http://127.0.0.1:8025/login?code=") || strings.Contains(out+errOut, tok.Reveal()) {
		t.Fatalf("admin-url: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	code, out, errOut = cli(t, map[string]string{"MAILWORKER_ADMIN_LISTEN": "off"}, "admin-url", "--config", path)
	if code != 1 || !strings.Contains(errOut, "off") {
		t.Fatalf("admin-url with the listener off: exit %d %s%s", code, out, errOut)
	}
}

// TestCheckConfigWarnsAboutAdmin: a public admin listen without a token is
// not an error (run keeps fetching without the listener) but a warning.
func TestCheckConfigWarnsAboutAdmin(t *testing.T) {
	path := writeFile(t, "mw.yaml", "admin: {listen: \"0.0.0.0:8025\"}\nservers: []\n")
	code, out, errOut := runCheckConfig(t, nil, "--config", path)
	if code != 0 || !strings.Contains(errOut, "warning: the admin listener will not start") || !strings.Contains(errOut, "not a loopback address") {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
}
