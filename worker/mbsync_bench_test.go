package worker

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mailworker/mailworker/imaptest"
)

// TestPipelineVsMbsync prints how fast `mailworker run --once` fetches,
// parses, publishes and acknowledges a 2,000-message mailbox from Dovecot
// on loopback, beside mbsync downloading the same mailbox from the same
// Dovecot in the same run. It asserts nothing about time; it only checks
// that every message became exactly one event.
//
//	MAILWORKER_BENCH=1 go test -run TestPipelineVsMbsync -v -timeout 30m ./worker
func TestPipelineVsMbsync(t *testing.T) {
	if os.Getenv("MAILWORKER_BENCH") != "1" {
		t.Skip("set MAILWORKER_BENCH=1 to run the pipeline benchmark (scripts/bench-pipeline.sh)")
	}
	mbsync, err := exec.LookPath("mbsync")
	if err != nil {
		t.Fatal("mbsync not found: apt-get install -y isync")
	}
	bin := buildBinary(t)
	d := imaptest.StartDovecot(t, imaptest.DovecotOptions{Users: map[string]string{testUser: testPassword}})
	n := 2000
	if v, err := strconv.Atoi(os.Getenv("MAILWORKER_BENCH_MESSAGES")); err == nil && v > 0 {
		n = v
	}
	msgs := benchMailbox(n)
	var total int64
	for _, m := range msgs {
		total += int64(len(m))
	}
	d.SeedMaildir(testUser, "INBOX", msgs)
	mb := float64(total) / 1e6
	t.Logf("mailbox: %d messages, %.1f MB (median %d bytes)", len(msgs), mb, len(msgs[len(msgs)/2]))

	runMailworker := func(round int) result {
		b := startBroker(t)
		dir := t.TempDir()
		cfgFile := filepath.Join(dir, "mailworker.yaml")
		cfg := fmt.Sprintf(`data_dir: %s
nats: {url: %s}
admin: {listen: "off"}
log: {format: json, level: warn}
servers:
  - name: bench
    protocol: imaps
    host: 127.0.0.1
    port: %d
    tls: {ca_file: %s}
    username: %s
    auth: {method: password, password_env: %s}
    after_fetch: none
    max_per_fetch: 5000
`, filepath.Join(dir, "data"), b.url(), d.Port(), d.CAFile(), testUser, passwordEnv)
		if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "run", "--once", "--config", cfgFile)
		cmd.Env = append(os.Environ(), passwordEnv+"="+testPassword)
		r := timed(t, cmd)
		if got := b.count(t); got != len(msgs) {
			t.Fatalf("round %d: %d events; want %d", round, got, len(msgs))
		}
		b.stop()
		return r
	}
	runMbsync := func(round int) result {
		dir := t.TempDir()
		rc := filepath.Join(dir, "mbsyncrc")
		conf := fmt.Sprintf(`IMAPAccount bench
Host localhost
Port %d
User %s
Pass %s
SSLType IMAPS
CertificateFile %s

IMAPStore remote
Account bench

MaildirStore local
Path %s/
Inbox %s/INBOX

Channel bench
Far :remote:
Near :local:
Patterns INBOX
Sync Pull
Create Near
SyncState *
`, d.Port(), testUser, testPassword, d.CAFile(), dir, dir)
		if err := os.WriteFile(rc, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		r := timed(t, exec.Command(mbsync, "-q", "-c", rc, "-a"))
		n := 0
		for _, sub := range []string{"new", "cur"} {
			es, _ := os.ReadDir(filepath.Join(dir, "INBOX", sub))
			n += len(es)
		}
		if n != len(msgs) {
			t.Fatalf("round %d: mbsync downloaded %d messages; want %d", round, n, len(msgs))
		}
		return r
	}
	const rounds = 2
	var mw, ms []result
	for round := 0; round < rounds; round++ {
		// Alternate the order so neither always gets the warmer cache.
		if round%2 == 0 {
			ms = append(ms, runMbsync(round))
			mw = append(mw, runMailworker(round))
		} else {
			mw = append(mw, runMailworker(round))
			ms = append(ms, runMbsync(round))
		}
	}
	fmt.Printf("\n%-12s %5s %8s %9s %8s %10s\n", "tool", "round", "seconds", "msgs/s", "MB/s", "peak RSS")
	var sumMW, sumMS float64
	for i := 0; i < rounds; i++ {
		for _, row := range []struct {
			name string
			r    result
		}{{"mailworker", mw[i]}, {"mbsync", ms[i]}} {
			fmt.Printf("%-12s %5d %8.2f %9.0f %8.1f %7.0f MB\n", row.name, i+1, row.r.secs, float64(len(msgs))/row.r.secs, mb/row.r.secs, row.r.rssMB)
		}
		sumMW += mw[i].secs
		sumMS += ms[i].secs
	}
	fmt.Printf("throughput ratio mailworker/mbsync: %.2f (above 1 means mailworker is faster)\n\n", sumMS/sumMW)
}

// result is one timed run of a tool.
type result struct {
	secs  float64 // wall time
	rssMB float64 // peak resident set size
}

// timed runs cmd to completion and returns its wall time and peak RSS.
func timed(t *testing.T, cmd *exec.Cmd) (r result) {
	t.Helper()
	var out logBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", cmd.Path, err)
	}
	// The child's rusage Maxrss would count the test process's own memory
	// at fork time; VmHWM in /proc is the child's peak since exec. Poll it
	// until the child exits and keep the last reading.
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	status := fmt.Sprintf("/proc/%d/status", cmd.Process.Pid)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var hwmKB int64
	for {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("%s: %v\n%s", cmd.Path, err, out.String())
			}
			r.secs = time.Since(start).Seconds()
			r.rssMB = float64(hwmKB) / 1024
			return r
		case <-tick.C:
			if kb := vmHWM(status); kb > hwmKB {
				hwmKB = kb
			}
		}
	}
}

// vmHWM reads a process's peak resident set size in kB, 0 when gone.
func vmHWM(statusFile string) int64 {
	b, err := os.ReadFile(statusFile)
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb
		}
	}
	return 0
}

// benchMailbox returns n messages: text mail of 4–16 KB (median about
// 8 KB) and, every 50th, a message with a 2–8 MB attachment.
func benchMailbox(n int) [][]byte {
	msgs := make([][]byte, n)
	for i := range msgs {
		size := 4<<10 + (i*7919)%(12<<10)
		if i%50 == 49 {
			size = 2<<20 + (i%7)*(1<<20)
		}
		msgs[i] = message(i, size)
	}
	return msgs
}
