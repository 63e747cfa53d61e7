//go:build linux || darwin || freebsd || openbsd || netbsd || dragonfly

// Package flock takes advisory whole-file locks (flock(2)), which the kernel
// releases when the process dies, kill -9 included.
package flock

import (
	"errors"
	"os"
	"syscall"
)

// Supported reports whether locks are real on this system.
const Supported = true

// TryLock takes an exclusive lock on f without waiting; false means another
// open file description holds it (another process, or another os.Open of the
// same file in this one).
func TryLock(f *os.File) (bool, error) {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, syscall.EWOULDBLOCK):
			return false, nil
		case errors.Is(err, syscall.EINTR):
			continue
		default:
			return false, err
		}
	}
}

// Unlock releases the lock taken by TryLock.
func Unlock(f *os.File) { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN) }
