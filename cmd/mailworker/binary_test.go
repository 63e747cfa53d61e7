package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// The tests that walk a user's paths run the real binary, as a user would:
// built once per `go test` process into a temporary directory.
var (
	binOnce sync.Once
	binPath string
	binErr  error
	binOut  []byte
)

// mailworkerBinary builds ./cmd/mailworker once and returns its path.
func mailworkerBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "mailworker-bin-*")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "mailworker")
		cmd := exec.Command("go", "build", "-o", binPath, ".")
		binOut, binErr = cmd.CombinedOutput()
	})
	if binErr != nil {
		t.Fatalf("go build: %v\n%s", binErr, binOut)
	}
	return binPath
}

// TestMain removes the binary built by mailworkerBinary.
func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}
