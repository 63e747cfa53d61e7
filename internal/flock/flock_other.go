//go:build !(linux || darwin || freebsd || openbsd || netbsd || dragonfly)

// Package flock takes advisory whole-file locks (flock(2)), which the kernel
// releases when the process dies, kill -9 included.
package flock

import "os"

// Supported reports whether locks are real on this system. Elsewhere
// (Windows, Solaris…) nothing is locked; mailworker is built and tested on
// Linux.
const Supported = false

// TryLock always succeeds where flock does not exist.
func TryLock(*os.File) (bool, error) { return true, nil }

// Unlock does nothing where flock does not exist.
func Unlock(*os.File) {}
