package worker

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/mailworker/mailworker/internal/flock"
)

// LockFile is the file, relative to the data directory, that the process
// owning the data directory (a `mailworker run`, or a CLI verb running the
// embedded NATS server itself) holds an exclusive lock on.
const LockFile = "lock"

// ErrDataDirLocked is returned by LockDataDir when another process holds
// the data directory.
var ErrDataDirLocked = errors.New("data_dir is in use by another mailworker")

// DataDirLock is a held lock on a data directory. The kernel releases it
// when the process ends, however it ends (kill -9 included), so a restart
// after a crash is never refused.
type DataDirLock struct{ f *os.File }

// LockDataDir takes the lock on dir without waiting. When another process
// holds it, the error wraps ErrDataDirLocked and names that process.
func LockDataDir(dir string) (*DataDirLock, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("data_dir: %w", err)
	}
	path := filepath.Join(dir, LockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("data_dir lock: %w", err)
	}
	held, err := flock.TryLock(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("data_dir lock %s: %w", path, err)
	}
	if !held {
		owner, _ := os.ReadFile(path)
		f.Close()
		who := strings.TrimSpace(string(owner))
		if who == "" {
			who = "another process"
		}
		return nil, fmt.Errorf("%w: %s holds %s; stop it first, or give this one its own data_dir "+
			"(to watch a running worker use `mailworker events`, `status` and the other verbs, which share it)",
			ErrDataDirLocked, who, path)
	}
	// Say who holds it, for the error above. Best effort.
	if err := f.Truncate(0); err == nil {
		fmt.Fprintf(f, "pid %d (%s)\n", os.Getpid(), strings.Join(append([]string{filepath.Base(os.Args[0])}, firstArg()...), " "))
	}
	return &DataDirLock{f: f}, nil
}

func firstArg() []string {
	if len(os.Args) > 1 {
		return os.Args[1:2]
	}
	return nil
}

// DataDirLocked reports whether a process (this one included) holds the
// lock on dir.
func DataDirLocked(dir string) bool {
	f, err := os.OpenFile(filepath.Join(dir, LockFile), os.O_RDWR, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	held, err := flock.TryLock(f)
	if err != nil {
		return false
	}
	if held {
		flock.Unlock(f)
		return false
	}
	return true
}

// Release gives the lock up. Safe on nil and more than once.
func (l *DataDirLock) Release() {
	if l == nil || l.f == nil {
		return
	}
	flock.Unlock(l.f)
	l.f.Close()
	l.f = nil
}
